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


def relay(master_fd: int, in_fd: int = 0, out_fd: int = 1) -> None:
    """Copy both ways until the far side closes (EIO on the master) or our input ends."""
    previous = signal.signal(signal.SIGWINCH, lambda *_: copy_window_size(in_fd, master_fd))
    copy_window_size(in_fd, master_fd)
    try:
        with raw_terminal(in_fd):
            _pump(master_fd, in_fd, out_fd)
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _pump(master_fd: int, in_fd: int, out_fd: int) -> None:
    watched = [master_fd, in_fd]
    while True:
        readable, _, _ = select.select(watched, [], [])
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
            data = os.read(in_fd, CHUNK)
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
