"""Adopt a running process into a new tmux pane, whose own pty becomes its terminal.

No relay process: tmux itself is the program's terminal. The pane's first process is our holder
(holder.py), which releases the pty for the target and lives exactly as long as the target.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

from reptyr_tmux import proc
from reptyr_tmux.attach import attach
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.holder import READY_COMMS
from reptyr_tmux.survey import describe, survey
from reptyr_tmux.text import printable, tmux_literal
from reptyr_tmux.tmux import Pane, Server

HOLDER_READY_S = 5.0


@dataclass
class Adopted:
    pid: int
    name: str
    pane: Pane
    old_tty: str
    took_ms: float


def check(pid: int, server: Server | None, force_stdio: bool = False) -> str:
    """Why PID can be adopted (or a Refusal saying why not), without touching it."""
    plan = survey(pid, force_stdio)
    if server is not None:
        _refuse_tmux_itself(pid, server)
    how = ("its own session leader" if plan.session_leader else
           "a shell's job; it will be stopped briefly so the shell gets its prompt back"
           if plan.stop_first else "alone in its process group")
    return (f"process {describe(plan.stat)} can be adopted: it is {how}; fds {plan.fds} "
            f"point at {proc.tty_name(plan.stat.tty_dev)}")


def adopt(pid: int, server: Server, placement: str = "window", target: str | None = None,
          redraw: bool = True, force_stdio: bool = False, start_time: int | None = None,
          remain_on_exit: bool = False) -> Adopted:
    started = time.monotonic()
    plan = survey(pid, force_stdio)  # refuse before any pane exists
    if start_time is not None and plan.stat.starttime != start_time:
        raise Refusal(f"process {pid} is not the one you picked (its pid was reused); pick again")
    _refuse_tmux_itself(pid, server)
    name = printable(plan.stat.comm, 40)
    pane = _new_pane(server, placement, holder_command(pid, plan.stat.starttime), name, target)
    try:
        _wait_for_holder(pane)
        attach(pid, pane.pane_tty, force_stdio=force_stdio)
    except BaseException:
        _close(pane)
        raise
    _dress(server, pane, placement, name, remain_on_exit)
    if redraw:
        redraw_screen(pid)
    return Adopted(pid, name, pane, proc.tty_name(plan.stat.tty_dev), (time.monotonic() - started) * 1000)


def _new_pane(server: Server, placement: str, command: list[str], name: str, target: str | None) -> Pane:
    if placement != "popup":
        return server.new_pane(placement, command, name, target)
    if server.version() < (3, 2):
        raise Refusal("--popup needs tmux 3.2 or newer; use --window, --split-h or --split-v")
    return server.new_popup(command, name, target)


def holder_command(pid: int, starttime: int) -> list[str]:
    return [sys.executable, "-m", "reptyr_tmux.holder", str(pid), str(starttime)]


def redraw_screen(pid: int) -> None:
    """SIGTSTP, then SIGCONT once it has landed: curses programs repaint in their SIGTSTP handler.

    The target now leads an orphaned group, so the kernel drops the stop for a program without a
    handler. SIGCONT must wait: sent while SIGTSTP is still pending, it cancels it (and the repaint).
    It is needed only when the handler stopped the program for real (raise(SIGSTOP)).
    """
    try:
        # ncurses repaints inside the handler: landing while it still handles the attach's SIGWINCH
        # garbles both, so wait until that is delivered and the program is asleep again.
        _wait(lambda: not _pending(pid, signal.SIGWINCH) and _state(pid) == "S")
        os.kill(pid, signal.SIGTSTP)
        if _wait(lambda: not _pending(pid, signal.SIGTSTP)) and _wait(lambda: _state(pid) == "T", 0.05):
            os.kill(pid, signal.SIGCONT)
    except (OSError, KeyError):
        return  # it exited meanwhile: nothing to redraw


def _pending(pid: int, signum: int) -> bool:
    status = proc.read_status(pid)
    mask = proc.signal_mask(status, "SigPnd") | proc.signal_mask(status, "ShdPnd")
    return proc.has_signal(mask, signum)


def _state(pid: int) -> str:
    return proc.read_stat(pid).state


def _wait(condition, limit_s: float = 0.5) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _refuse_tmux_itself(pid: int, server: Server) -> None:
    if pid == server.server_pid():
        raise Refusal(f"process {pid} is the tmux server itself")


def _wait_for_holder(pane: Pane) -> None:
    """The holder gives up the pane's tty (TIOCNOTTY) before the target can take it."""
    deadline = time.monotonic() + HOLDER_READY_S
    while time.monotonic() < deadline:
        try:
            stat = proc.read_stat(pane.pane_pid)
        except OSError:
            stat = None
        if stat is None or stat.state == "Z":
            raise ReptyrError("the new pane closed before the process could move in "
                              "(the process may have exited, or its pid been reused)")
        if stat.tty_nr == 0 and stat.comm in READY_COMMS:
            return
        time.sleep(0.002)
    raise ReptyrError("the new pane's holder did not get ready within 5 s")


def _close(pane: Pane) -> None:
    try:
        os.kill(pane.pane_pid, signal.SIGKILL)  # the holder ignores SIGHUP; its exit closes the pane
    except ProcessLookupError:
        pass


def _dress(server: Server, pane: Pane, placement: str, name: str, remain_on_exit: bool) -> None:
    if placement == "popup":
        return  # titled at creation; a popup has no options of its own
    if placement != "window":
        server.cmd("select-pane", "-t", pane.pane_id, "-T", tmux_literal(name, 40))
    if remain_on_exit:
        server.cmd("set-option", "-p", "-t", pane.pane_id, "remain-on-exit", "on")
