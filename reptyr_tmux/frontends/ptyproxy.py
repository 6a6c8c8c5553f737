"""Relay between our own terminal and a pty master, as reptyr does in the current terminal."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import termios
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING

from reptyr_tmux.engine.transaction import signals_held

if TYPE_CHECKING:  # (it loads ptrace's modules: a relay without a guard never needs them)
    from reptyr_tmux.engine.shell_hangup import ShellHangupGuard

CHUNK = 65536


def copy_window_size(source_fd: int, dest_fd: int) -> None:
    try:
        size = fcntl.ioctl(source_fd, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dest_fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal: nothing to copy


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Our terminal in raw mode for the duration, restored however we leave."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd, termios.TCSADRAIN)  # keep what the user typed ahead
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


class Hangup(Exception):
    """We were told to stop (SIGHUP: our terminal went away; SIGTERM)."""


def relay(master_fd: int, in_fd: int = 0, out_fd: int = 1, guard: ShellHangupGuard | None = None) -> None:
    """Copy both ways until the far side closes (EIO on the master) or our input ends. With a guard,
    the moved job's SIGHUP action goes back when its old shell exits, and before we let go of the
    master in any case (our terminal closed, SIGHUP or SIGTERM to us)."""
    previous = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(in_fd, master_fd))
    stops = {signum: signal.signal(signum, _hang_up) for signum in (signal.SIGHUP, signal.SIGTERM)}
    copy_window_size(in_fd, master_fd)
    try:
        with raw_terminal(in_fd):
            _pump(master_fd, in_fd, out_fd, guard)
    except Hangup:
        pass
    finally:
        # Held until our own handlers are gone: a second hangup or a SIGTERM must not end the give-back
        # mid-way, nor raise from here; one that came meanwhile is then delivered as usual.
        with signals_held():
            if guard is not None:
                guard.give_back()
            signal.signal(signal.SIGWINCH, previous)
            for signum, handler in stops.items():
                signal.signal(signum, handler)


def _hang_up(*_: object) -> None:
    raise Hangup


def _pump(master_fd: int, in_fd: int, out_fd: int, guard: ShellHangupGuard | None) -> None:
    watched = [master_fd, in_fd]
    while True:
        shell_exit = guard.shell_exit if guard else None
        readable, _, _ = select.select(watched + ([shell_exit] if shell_exit is not None else []), [], [])
        if shell_exit is not None and shell_exit in readable:
            guard.give_back()
        if master_fd in readable:
            try:
                data = os.read(master_fd, CHUNK)
            except BlockingIOError:
                continue  # a non-blocking master that had nothing after all
            except OSError as e:
                if e.errno == errno.EIO:
                    return  # every slave fd closed: the program is gone
                raise
            if not data:
                return
            _write_all(out_fd, data)
        if in_fd in readable:
            try:
                data = os.read(in_fd, CHUNK)
            except OSError as e:
                if e.errno == errno.EIO:
                    return  # our terminal hung up
                raise
            if not data:
                return  # our input ended
            _write_all(master_fd, data)


def _write_all(fd: int, data: bytes) -> None:
    """All of it, also to a non-blocking fd (a stolen master keeps its old holder's flags)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
