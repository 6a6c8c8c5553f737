"""Adopt a running process into a new tmux pane (or screen window).

Attach mode: the pane's own pty becomes the program's terminal, no relay; the pane's first process
is our holder (holder.py), which releases the pty for it and lives exactly as long as it does.
Session mode: the same, for every process of the program's terminal session (session.py); the holder
lives as long as the session's leader (its shell).
Steal mode (asked for only): the whole session keeps its terminal, whose master a relay (relay.py) in
the pane takes over from its old holder (steal.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import NamedTuple

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.engine.session import SessionPlan, move_session, repaint_by_resize, survey_session
from reptyr_tmux.engine.survey import choose_mode, describe, survey
from reptyr_tmux.engine.worker import Apart, engine_process, run_detached
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.launch import python_argv
from reptyr_tmux.mux.modes import apply as apply_modes
from reptyr_tmux.mux.modes import modes_of as terminal_modes
from reptyr_tmux.mux.multiplexer import Multiplexer, Pane
from reptyr_tmux.native.holder import READY_COMMS, holder_argv
from reptyr_tmux.text import printable

HOLDER_READY_S = 5.0


class Adopted(NamedTuple):
    pid: int
    name: str
    pane: Pane
    old_tty: str
    took_ms: float
    mode: str  # "attach" (the process alone), "session" (its whole session) or "steal" (relayed)
    why: str
    terminal_modes: list[str]
    caveat: str = ""  # what the user should know about the result


def check(pid: int, server: Multiplexer | None, force_stdio: bool = False, requested: str = "auto") -> str:
    """Why PID can be adopted in the `requested` mode (or a Refusal saying why not), without touching
    it or anyone else."""
    if server is not None:
        server.refuse_own(pid)
    mode, why = choose_mode(pid, requested, force_stdio)
    if mode == "session":
        plan = survey_session(pid)
        return (f"process {describe(plan.picked)} can be adopted with its whole session ({len(plan.members)} "
                f"processes, led by {describe(plan.leader)} on {plan.old_tty}): {why}")
    if mode == "steal":
        from reptyr_tmux.engine.steal import find_session  # steal mode's modules only where it is used

        session = find_session(pid)
        holders = ", ".join(f"{h.pid} ({printable(h.comm)})" for h in session.holders)
        return (f"process {pid} can be adopted with its whole session ({len(session.members)} processes, "
                f"terminal held by {holders}): {why}")
    plan = survey(pid, force_stdio)
    how = ("its own session leader" if plan.session_leader else
           "a shell's job; it will be stopped briefly so the shell gets its prompt back"
           if plan.stop_first else "alone in its process group")
    return (f"process {describe(plan.stat)} can be adopted alone: it is {how}; fds {plan.fds} "
            f"point at {proc.tty_name(plan.stat.tty_dev)}")


def adopt(pid: int, server: Multiplexer, placement: str = "window", target: str | None = None,
          redraw: bool = True, force_stdio: bool = False, start_time: int | None = None,
          remain_on_exit: bool = False, mode: str = "auto", modes_spec: str = "auto") -> Adopted:
    started = time.monotonic()
    # Its own process, loading ptrace's modules while we look and open the pane (or started earlier,
    # while the menu was shown).
    with engine_process() as engine:
        return _adopt(engine, started, pid, server, placement, target, redraw, force_stdio, start_time,
                      remain_on_exit, mode, modes_spec)


def _adopt(engine: Apart, started: float, pid: int, server: Multiplexer, placement: str, target: str | None,
           redraw: bool, force_stdio: bool, start_time: int | None, remain_on_exit: bool, mode: str,
           modes_spec: str) -> Adopted:
    try:
        stat = proc.read_stat(pid)
    except OSError:
        raise Refusal(f"no process {pid} exists; check the id with 'ps'") from None
    if start_time is not None and stat.starttime != start_time:
        raise Refusal(f"process {pid} is not the one you picked (its pid was reused); pick again")
    server.refuse_own(pid)
    stats = proc.all_stats()  # one scan for choosing the mode and the checks before any pane exists
    chosen, why = choose_mode(pid, mode, force_stdio, stats)
    plan = None
    if chosen == "session":  # surveyed before any pane exists; auto mode may fall back to the relay
        chosen, why, plan = _session_or_relay(pid, why, stats, fall_back=mode == "auto")
    name = printable(stat.comm, 40)
    old_tty = proc.pts_path(stat.tty_dev) if stat.tty_dev else None
    # Read the modes before moving: the old emulator forgets them once the terminal is left (tmux
    # closes a pane whose pty nobody holds any more).
    carried, _ = terminal_modes(pid, modes_spec, old_tty)
    caveat = ""
    if chosen == "session":
        pane, caveat = _session_into_pane(engine, plan, server, placement, target, name, stats, carried,
                                          redraw)
    elif chosen == "steal":
        pane = _steal_into_pane(pid, server, placement, target, name, stats)
    else:
        pane = _attach_into_pane(engine, pid, server, placement, target, name, force_stdio, stats)
    server.dress(pane, placement, name, remain_on_exit)
    if chosen == "attach":
        apply_modes(carried, pane.pane_tty)  # before the repaint, so it lands on the screen it sets
        if redraw:
            redraw_screen(pid)
            # ncurses' endwin (in its SIGTSTP handler) turns keypad mode off: set the modes again,
            # but not the alternate screen, which a second switch would blank.
            apply_modes([m for m in carried if m.name != "alt-screen"], pane.pane_tty)
    elif chosen == "steal":
        apply_modes(carried, pane.pane_tty)
    return Adopted(pid, name, pane, proc.tty_name(stat.tty_dev), (time.monotonic() - started) * 1000,
                   chosen, why, [m.name for m in carried], caveat)


def _session_or_relay(pid: int, why: str, stats: list[proc.Stat], fall_back: bool
                      ) -> tuple[str, str, SessionPlan | None]:
    """The session's plan; or, as auto mode's last resort, where a member cannot be moved (seccomp,
    traced...) but we may take the terminal's master (root, or an emulator of ours), the relay."""
    try:
        return "session", why, survey_session(pid, stats)
    except Refusal as refusal:
        if not fall_back:
            raise
        from reptyr_tmux.engine.steal import find_session

        try:
            find_session(pid, stats)
        except ReptyrError:
            raise refusal from None
        return "steal", f"its session cannot move ({refusal}), so a relay takes its terminal instead", None


def _session_into_pane(engine: Apart, plan: SessionPlan, server: Multiplexer, placement: str,
                       target: str | None, name: str, stats: list[proc.Stat], carried: list, redraw: bool
                       ) -> tuple[Pane, str]:
    """The whole session onto the pane's own pty; the holder lives as long as the session's leader."""
    leader = plan.leader
    pane = _open_held_pane(leader.pid, leader.starttime, server, placement, target, name)
    try:  # (the pane's pty is free: its holder has just released it)
        moved = engine.run(move_session, plan, pane.pane_tty, note=_note(pane),
                           take_typed_ahead=server.can_type())
    except BaseException:
        _close(pane)
        raise
    _retire_holders_of(plan.old_terminal, stats)  # moved before: its old pane has nothing left to show
    apply_modes(carried, pane.pane_tty)  # before the repaint: the alternate screen first, once
    if redraw:
        repaint_by_resize(pane.pane_tty, moved.foreground_pids)
    if moved.typed_ahead:  # as on the old terminal, it waits in the input queue for whoever reads next
        server.type_into(pane, moved.typed_ahead.replace(b"\0", b"").decode(errors="replace"))
    caveat = ""
    if moved.running_jobs:
        caveat = (f"; {moved.running_jobs} running process(es) work on but lost /dev/tty "
                  "(Linux gives a terminal back only to the shell; README, Limits)")
    if moved.warnings:
        caveat += f"; moved, but: {'; '.join(moved.warnings)}"
    return pane, caveat


def _note(pane: Pane) -> str:
    return (f"reptyr-tmux: this terminal's session moved to {pane.place}; "
            "this terminal can be closed.")


def _attach_into_pane(engine: Apart, pid: int, server: Multiplexer, placement: str, target: str | None,
                      name: str, force_stdio: bool, stats: list[proc.Stat]) -> Pane:
    plan = survey(pid, force_stdio, stats)  # refuse before any pane exists (attach looks again)
    pane = _open_held_pane(pid, plan.stat.starttime, server, placement, target, name)
    try:
        engine.run(attach, pid, pane.pane_tty, force_stdio=force_stdio)  # safe from our kill -9
    except BaseException:
        _close(pane)
        raise
    _retire_holders_of(plan.old_tty, stats)  # adopted before: its old pane has nothing left to show
    return pane


def _open_held_pane(pid: int, starttime: int, server: Multiplexer, placement: str, target: str | None,
                    name: str) -> Pane:
    """A new pane whose first process (our holder) has released its pty and waits for PID to exit."""
    # The 343-byte holder is ready in about a millisecond; the Python one (~50 ms) can also tell
    # its pid and tty through a report file, which popups and screen windows need.
    fast = None if server.needs_report(placement) else holder_argv(pid)
    command = fast or [*python_argv("reptyr_tmux.native.holder"), str(pid), str(starttime)]
    pane = server.open_pane(placement, command, name, target)
    try:
        _wait_ready(pane, READY_COMMS)
        if proc.read_stat(pid).starttime != starttime:  # the fast holder does not check
            raise Refusal(f"process {pid} exited and its pid was reused meanwhile; nothing was moved")
    except BaseException:
        _close(pane)
        raise
    return pane


def _retire_holders_of(tty: proc.Tty | None, stats: list[proc.Stat]) -> None:
    """Our holders still waiting on the terminal the program just left: end them, so their panes close.
    (`stats`, taken before the move, has them: a holder lives as long as what it holds.) Only ours (our
    uid) on that very terminal: one of another devpts instance (a container) with the same name and
    pty number is a stranger."""
    if tty is None:
        return
    me = os.geteuid()
    for stat in stats:
        if stat.comm in READY_COMMS and proc.uid_of(stat.pid) == me and proc.tty_of_fd(stat.pid, 0) == tty:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stat.pid, signal.SIGKILL)


def _steal_into_pane(pid: int, server: Multiplexer, placement: str, target: str | None, name: str,
                     stats: list[proc.Stat]) -> Pane:
    from reptyr_tmux.engine.pidfd import available as pidfd_getfd_available
    from reptyr_tmux.engine.steal import SessionMoved, find_session, silence_holders
    from reptyr_tmux.native.native_relay import relay_argv
    from reptyr_tmux.native.relay import RELAY_NAME

    session = find_session(pid, stats)
    holder = session.holders[0]
    start = proc.read_stat(holder.pid).starttime
    # The 933-byte native relay costs ~4 ms CPU per MiB and 32 kB; the Python one (~6 ms, ~13 MB)
    # also runs elsewhere and can report its pid and tty, which popups and screen windows need.
    native = not server.needs_report(placement) and pidfd_getfd_available()  # it needs pidfd_getfd
    fast = relay_argv(holder.pid, holder.fds[0]) if native else None
    command = fast or [*python_argv("reptyr_tmux.native.relay"), str(holder.pid), str(start),
                       str(holder.fds[0])]
    pane = server.open_pane(placement, command, name, target)
    try:
        _wait_ready(pane, {RELAY_NAME.decode()})
        if proc.read_stat(holder.pid).starttime != start:  # the native relay does not check
            raise Refusal(f"the terminal's holder {holder.pid} exited meanwhile; nothing was moved")
        silence_holders(session)
    except SessionMoved:
        raise  # the relay holds the session now: closing its pane would hang the session up
    except BaseException:
        _close(pane)
        raise
    return pane


def redraw_screen(pid: int) -> None:
    """SIGTSTP, then SIGCONT once it has landed: curses programs repaint in their SIGTSTP handler.

    The target now leads an orphaned group, so the kernel drops the stop for a program without a
    handler. SIGCONT must wait: sent while SIGTSTP is still pending, it cancels it (and the repaint).
    It is harmless otherwise and needed when the handler stopped the program for real.
    """
    try:
        # ncurses repaints inside the handler: landing while it still handles the attach's SIGWINCH
        # garbles both, so wait until that is delivered and the program is asleep again.
        _wait(lambda: not proc.signal_pending(pid, signal.SIGWINCH) and _state(pid) == "S")
        os.kill(pid, signal.SIGTSTP)
        # Then let its handler run, and continue it: nothing else in its orphaned group ever would.
        _wait(lambda: not proc.signal_pending(pid, signal.SIGTSTP) and _state(pid) in "ST", 1.0)
        os.kill(pid, signal.SIGCONT)
        _continue_if_it_stops_later(pid)
    except (OSError, KeyError):
        return  # it exited meanwhile: nothing to redraw


def _continue_if_it_stops_later(pid: int, watch_s: float = 3.0) -> None:
    """A slow handler (vim saving its swap file) may stop the program after our SIGCONT; a short-lived
    child of ours keeps watching so we can return at once."""
    def watch() -> None:
        deadline = time.monotonic() + watch_s
        while time.monotonic() < deadline:
            if _state(pid) == "T":
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)

    run_detached(watch)


def _state(pid: int) -> str:
    return proc.read_stat(pid).state


def _wait(condition, limit_s: float = 0.5) -> bool:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _wait_ready(pane: Pane, ready_comms: set[str] | frozenset[str]) -> None:
    """Until the pane's first process renames itself ready (the holder: tty released; the relay:
    master copied). A fresh child of tmux shows no tty yet either, so the name is the sign."""
    deadline = time.monotonic() + HOLDER_READY_S
    while time.monotonic() < deadline:
        try:
            stat = proc.read_stat(pane.pane_pid)
        except OSError:
            stat = None
        if stat is None or stat.state == "Z":
            raise ReptyrError("the new pane closed before the process could move in "
                              "(the process may have exited, or its pid been reused)")
        if stat.comm in ready_comms:
            return
        time.sleep(0.002)
    raise ReptyrError("the new pane's first process did not get ready within 5 s")


def _close(pane: Pane) -> None:
    try:
        os.kill(pane.pane_pid, signal.SIGKILL)  # the holder ignores SIGHUP; its exit closes the pane
    except ProcessLookupError:
        pass
