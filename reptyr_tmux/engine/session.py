"""Move a whole terminal session onto another terminal: the shell, its jobs and their children at once.

Why: a job of an ssh session's shell is hung up by that shell when the connection drops, and an
ordinary user cannot take sshd's pty master (steal mode). Every process of the session is the user's
own, so each can be made to switch terminals itself; sshd and everyone else is left alone (the old
terminal is simply left with no reader).

The algorithm, one step a line (`_move`):
  survey    every member traceable by us, in our namespaces? Refused before anything is touched.
  hold      seize and stop every thread of every member; look again until no new member appears.
  prepare   termios copied; in each member the new terminal opened as each old fd was (access mode,
            O_NONBLOCK, O_APPEND, O_ASYNC and its owner: target_fds.py) and proven to be the very
            terminal we meant; the old fds parked; the old terminal's foreground made the leader's
            own group, so the hangup that comes next reaches only the leader's group.
  switch    in the leader: TIOCNOTTY the old terminal, TIOCSCTTY the new one. Point of no return:
            Linux clears the controlling terminal of every member on TIOCNOTTY and gives it back to
            none of them, so from here the move rolls forward and reports what did not happen.
  finish    the old foreground group made the new terminal's; the new terminal over every old fd;
            one line on the old terminal saying where the session went.
  let go    the SIGHUP/SIGCONT the switch sent are discarded; registers, signal masks, detach.
            Stopped jobs stay stopped, background jobs run on, the foreground job stays foreground.

What Linux leaves behind: jobs already running have no controlling terminal afterwards (stat tty 0,
/dev/tty gives ENXIO), though the terminal still sends them ^C, ^Z and SIGWINCH as its foreground group;
the shell, and every job it starts later, have the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import termios
import time
from typing import TYPE_CHECKING, NamedTuple

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import copy_termios, restore_termios, still_there, watch_new_tty
from reptyr_tmux.engine.survey import (
    describe,
    refuse_moved_meanwhile,
    refuse_unmovable,
    traceable_by_us,
)
from reptyr_tmux.engine.target_fds import kind_of, open_in_target, open_per_kind, park
from reptyr_tmux.engine.transaction import Transaction
from reptyr_tmux.errors import Refusal, ReptyrError, TargetGone

if TYPE_CHECKING:
    from reptyr_tmux.engine.remote import RemoteProcess

TIOCSCTTY, TIOCNOTTY, TIOCSPGRP = termios.TIOCSCTTY, termios.TIOCNOTTY, termios.TIOCSPGRP
HANGUP_SIGNALS = (signal.SIGHUP, signal.SIGCONT)  # what TIOCNOTTY sends the terminal's foreground
# Layout of each member's scratch page.
PGRP_AT, SIGACTION_AT = 1024, 2048  # (target_fds uses 0 and 3072 on)
REPAINT_WAIT_S = 0.5


class SessionPlan(NamedTuple):
    """A terminal session to move, as surveyed before touching it."""

    picked: proc.Stat
    leader: proc.Stat
    members: list[proc.Stat]
    old_tty: str  # its name, for messages ("pts/3")
    old_terminal: proc.Tty  # its devpts instance and device: the number alone repeats across instances


class Moved(NamedTuple):
    leader: int
    members: list[int]
    foreground: int  # the process group in the foreground of the new terminal
    foreground_pids: list[int]
    running_jobs: int  # processes that lost their controlling terminal (Linux gives it back to none)
    warnings: list[str]  # what did not happen after the point of no return
    steps: list[str]
    typed_ahead: bytes = b""  # input typed on the old terminal that nobody had read (take_typed_ahead)


class Held(NamedTuple):
    """One member, stopped and in our hands, with its scratch page and facts read while frozen."""

    target: RemoteProcess
    stat: proc.Stat
    page: int
    fds: dict[int, int]  # fd on the old terminal -> its open flags


def survey_session(pid: int, stats: list[proc.Stat] | None = None) -> SessionPlan:
    """Refuse, naming the member and what to do, a session we cannot move whole; else say what it is."""
    try:
        picked = proc.read_stat(pid)
    except OSError:
        raise Refusal(f"no process {pid} exists; check the id with 'ps'") from None
    stats = stats or proc.all_stats()
    members = members_of(picked.sid, stats)
    leader = next((s for s in members if s.pid == picked.sid), None)
    # (a job still running from a session moved before has none of its own: its leader's tells)
    if (leader or picked).tty_dev is None:
        raise Refusal(f"process {describe(picked)} has no terminal, so it has no terminal session to move; "
                      "adopt it alone (--mode attach)")
    if leader is None:
        raise Refusal(f"the session of process {describe(picked)} has lost its leader (its shell exited), "
                      "and only a session leader can take a new terminal; adopt the process alone "
                      "(--mode attach)")
    _refuse_yama()
    for member in members:
        refuse_untraceable(member)
    return SessionPlan(picked, leader, members, proc.tty_name(leader.tty_dev),
                       _old_terminal(members, leader.tty_dev))


def members_of(sid: int, stats: list[proc.Stat]) -> list[proc.Stat]:
    return [s for s in stats if s.sid == sid and s.state not in ("Z", "X")]


def refuse_untraceable(stat: proc.Stat) -> None:
    """Everything we must be able to do to every member, checked from /proc before touching any."""
    try:
        status = proc.read_status(stat.pid)
    except OSError:
        return  # it has just exited: nothing of it to move
    who = describe(stat)
    if not traceable_by_us(stat, status):  # said first: the advice differs for a member
        raise Refusal(f"process {who} in that terminal session is not entirely yours (another user's, "
                      "setuid or setgid, like sudo or su), so it may not be traced; run this as root, "
                      "or move just the picked process (--mode attach)", short="a member is not yours")
    refuse_unmovable(stat, status)
    for kind in ("pid", "mnt"):
        if not _same_namespace(stat.pid, kind):
            raise Refusal(f"process {who} in that terminal session runs in another {kind} namespace "
                          "(a container); run reptyr-tmux inside it")


def _same_namespace(pid: int, kind: str) -> bool:
    try:
        return proc.same_namespace(pid, kind)
    except OSError:
        return True  # it has just exited: nothing to refuse


def _refuse_yama() -> None:
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        return
    if scope != "0" and os.geteuid() != 0:
        raise Refusal(f"Yama's ptrace_scope is {scope}, which lets a user trace only their own children, "
                      "and a terminal session is not; run as root, or set it to 0 with "
                      "'sysctl kernel.yama.ptrace_scope=0'")


def _old_terminal(members: list[proc.Stat], tty_dev: int) -> proc.Tty:
    """The session's terminal, from the members' own fds on its device number."""
    seen = {tty for member in members for tty in proc.fds_on(member.pid, {tty_dev}).values()}
    if not seen:
        raise Refusal(f"no process of the session on {proc.tty_name(tty_dev)} has that terminal open; "
                      "adopt the picked process alone (--mode attach -s)")
    if len(seen) > 1:
        raise Refusal(f"the session's fds point at two different terminals numbered "
                      f"{proc.tty_name(tty_dev)} (another devpts instance: a container); nothing was moved")
    return seen.pop()


def _fds_on(pid: int, terminal: proc.Tty) -> dict[int, int]:
    """The fds of `pid` on the old terminal (or /dev/tty, which is it), with their open flags."""
    found = {}
    for fd, tty in proc.fds_on(pid, {terminal.rdev, proc.DEV_TTY}).items():
        if tty == terminal or tty.rdev == proc.DEV_TTY:
            with contextlib.suppress(OSError):
                found[fd] = proc.fd_flags(pid, fd)
    return found


# -- the move ------------------------------------------------------------------------------------


def move_session(plan: SessionPlan, tty_path: str, note: str = "", verbose: bool = False,
                 take_typed_ahead: bool = False) -> Moved:
    """Move every process of the session onto `tty_path` (a free terminal: see check_tty_free).
    take_typed_ahead: also take what was typed on the old terminal and not yet read (Moved.typed_ahead),
    for the caller to type into the new one; nobody is left to read it there."""
    tx = Transaction(verbose)
    try:
        with tx:
            moved = _move(tx, plan, tty_path, note, take_typed_ahead)
    except ReptyrError as e:
        if tx.undo_errors and not isinstance(e, TargetGone):
            e.args = (f"{e.args[0]} (and could not undo: {'; '.join(tx.undo_errors)})",)
        raise
    return moved._replace(warnings=tx.forward_errors, steps=tx.steps_done)


def _move(tx: Transaction, plan: SessionPlan, tty_path: str, note: str, take_typed_ahead: bool) -> Moved:
    leader_pid = plan.leader.pid
    watch = watch_new_tty(tx, tty_path)
    tx.step("copy-termios", lambda: copy_termios(_any_fd_path(plan), tty_path), restore_termios(tty_path))
    held = _hold_everyone(tx, plan)
    leader = held[leader_pid]
    new_fds = {pid: open_per_kind(tx, member.target, member.page, tty_path, member.fds,
                                  readable=pid == leader_pid)
               for pid, member in held.items()}
    parked = {pid: {fd: tx.step("save-fd", lambda m=member, fd=fd: park(m.target, fd),
                                lambda copy, m=member: m.target.syscall("close", copy), always=True)
                    for fd in member.fds}
              for pid, member in held.items()}
    old_fd = _leader_old_fd(tx, leader)
    foreground = _foreground_to_keep(leader.stat, held)
    tx.step("old-foreground-to-leader", lambda: _set_foreground(leader, old_fd, leader.stat.pgid),
            lambda _: _set_foreground(leader, old_fd, foreground))
    hangup_group = [m for m in held.values() if m.stat.pgid == leader.stat.pgid]
    _refuse_a_stopped_one_among(hangup_group, plan)
    pending_before = {m.stat.pid: _pending(m.stat.pid) for m in hangup_group}
    tx.step("note-pending", lambda: None, lambda _: _discard_our_hangup(hangup_group, pending_before),
            always=True)
    tx.step("check-new-tty", lambda: still_there(watch, tty_path))
    ctty_fd = new_fds[leader_pid][os.O_RDWR]
    tx.step("release-old-ctty", lambda: leader.target.syscall("ioctl", old_fd, TIOCNOTTY, 0),
            lambda _: _retake(leader, old_fd))
    tx.step("set-ctty", lambda: leader.target.syscall("ioctl", ctty_fd, TIOCSCTTY, 0),
            lambda _: leader.target.syscall("ioctl", ctty_fd, TIOCNOTTY, 0))
    tx.roll_forward()  # see the module's docstring: the members' old controlling terminal is gone
    tx.step("set-foreground", lambda: _set_foreground(leader, ctty_fd, foreground))
    for member in held.values():
        for fd, flags in member.fds.items():
            cloexec = os.O_CLOEXEC if flags & os.O_CLOEXEC else 0
            tx.step("dup-over", lambda m=member, fd=fd, flags=flags, c=cloexec: m.target.syscall(
                "dup3", new_fds[m.stat.pid][kind_of(flags)], fd, c))
    old_copy = next(iter(parked[leader_pid].values()), None)  # the leader's parked fd on the old terminal
    typed = b""
    if take_typed_ahead and old_copy is not None:  # (everyone is still held: nobody else reads it)
        typed = tx.step("take-typed-ahead", lambda: _unread_input(leader_pid, old_copy)) or b""
    if note and old_copy is not None:
        tx.step("tell-old-terminal", lambda: _tell(leader_pid, old_copy, note))
    running = [m for m in held.values() if m.stat.pid != leader_pid]
    in_front = [pid for pid, m in held.items() if m.stat.pgid == foreground]
    return Moved(leader_pid, sorted(held), foreground, in_front, len(running), [], [], typed)


def _refuse_a_stopped_one_among(hangup_group: list[Held], plan: SessionPlan) -> None:
    """The switch sends SIGCONT to the leader's group, and SIGCONT wakes a stopped process the moment
    it is sent (discarding it afterwards cannot undo that): a stopped job must stay stopped. (Held, all
    show as traced, 't': the survey's look tells.)"""
    surveyed = {s.pid: s for s in plan.members}
    stopped = [m.stat for m in hangup_group if surveyed.get(m.stat.pid, m.stat).state == "T"]
    if stopped:
        raise Refusal(f"process {describe(stopped[0])} is stopped in the shell's own process group, and "
                      "moving the session would wake it; continue it (fg or bg) or end it first, or move "
                      "the picked process alone (--mode attach)", short="stopped in the shell's group")


def _hold_everyone(tx: Transaction, plan: SessionPlan) -> dict[int, Held]:
    """Stop every member; look again until nobody new has joined (a member may fork until held)."""
    # ptrace's modules load only in the engine's own process (worker.py warms them while the pane opens)
    from reptyr_tmux.engine.remote import hold_other_threads, release_threads

    targets: dict[int, RemoteProcess] = {}
    fresh = plan.members  # as surveyed; then everyone forked since, until a look finds nobody new
    while fresh:
        for member in fresh:
            refuse_untraceable(member)
            target = tx.step("hold-member", lambda m=member: _seize(m), lambda t: t and t.cure(), always=True)
            if target is None:
                continue  # it exited before we could hold it
            tx.step("hold-threads", lambda m=member: hold_other_threads(m.pid), release_threads, always=True)
            targets[member.pid] = target
        fresh = [s for s in members_of(plan.leader.sid, proc.all_stats()) if s.pid not in targets]
    if plan.leader.pid not in targets:
        raise TargetGone(f"the session's leader {describe(plan.leader)} exited; nothing was moved")
    surveyed = {s.pid: s for s in plan.members}
    held = {}
    for pid, target in targets.items():  # facts read now cannot change any more: everyone is frozen
        stat = proc.read_stat(pid)
        if pid in surveyed:
            refuse_moved_meanwhile(surveyed[pid], stat)
        page = tx.step("map-scratch", target.map_page, target.unmap_page, always=True)
        held[pid] = Held(target, stat, page, _fds_on(pid, plan.old_terminal))
    return held


def _seize(member: proc.Stat) -> RemoteProcess | None:
    from reptyr_tmux.engine.remote import RemoteProcess

    try:
        return RemoteProcess.infect(member.pid)
    except (TargetGone, Refusal):
        if _gone(member):
            return None
        raise


def _gone(member: proc.Stat) -> bool:
    try:
        stat = proc.read_stat(member.pid)
    except OSError:
        return True
    return stat.state in ("Z", "X") or stat.starttime != member.starttime


def _leader_old_fd(tx: Transaction, leader: Held) -> int:
    """An fd of the leader on its controlling terminal, for TIOCNOTTY (and TIOCSCTTY to undo it)."""
    if leader.fds:
        return next(iter(leader.fds))
    return tx.step("open-dev-tty", lambda: open_in_target(leader.target, leader.page, "/dev/tty"),
                   lambda fd: leader.target.syscall("close", fd), always=True)


def _foreground_to_keep(leader: proc.Stat, held: dict[int, Held]) -> int:
    """The old terminal's foreground group, if it still has a member (else the shell's own)."""
    if leader.tpgid > 0 and any(m.stat.pgid == leader.tpgid for m in held.values()):
        return leader.tpgid
    return leader.pgid


def _set_foreground(leader: Held, fd: int, pgrp: int) -> None:
    """TIOCSPGRP run by the leader (its signals are blocked, so SIGTTOU does not stop it)."""
    leader.target.write(leader.page + PGRP_AT, struct.pack("<i", pgrp))
    leader.target.syscall("ioctl", fd, TIOCSPGRP, leader.page + PGRP_AT)


def _retake(leader: Held, old_fd: int) -> None:
    leader.target.syscall("ioctl", old_fd, TIOCSCTTY, 0)


def _pending(pid: int) -> set[int]:
    try:
        status = proc.read_status(pid)
    except OSError:
        return set()
    mask = proc.pending_signals(status)
    return {s for s in HANGUP_SIGNALS if proc.has_signal(mask, s)}


def _discard_our_hangup(group: list[Held], before: dict[int, set[int]]) -> None:
    """The switch sent SIGHUP and SIGCONT to the leader's group; they wait, blocked. Drop those (and
    only those: one that was pending before we came stays), keeping each program's own disposition."""
    for member in group:
        for signum in _pending(member.stat.pid) - before.get(member.stat.pid, set()):
            member.target.discard_pending(signum, member.page + SIGACTION_AT)


def _tell(leader: int, old_fd: int, note: str) -> None:
    """One line on the old terminal, written by us through the leader's own fd on it (so it is the
    very terminal, whatever its name), never blocking: nothing may read it any more."""
    fd = os.open(f"/proc/{leader}/fd/{old_fd}", os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        os.write(fd, f"\r\n{note}\r\n".encode())
    finally:
        os.close(fd)


def _unread_input(leader: int, old_fd: int, limit: int = 65536) -> bytes:
    """What waits in the old terminal's input queue, the line being typed included: with ICANON off
    for a moment the kernel hands out the whole queue, not only finished lines. Nothing where that
    terminal has hung up (its ssh connection gone): there is nothing to carry then."""
    try:
        return _drain(f"/proc/{leader}/fd/{old_fd}", limit)
    except (OSError, termios.error):
        return b""


def _drain(path: str, limit: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        saved = termios.tcgetattr(fd)
        raw = list(saved)
        raw[3] &= ~termios.ICANON
        raw[6] = list(saved[6])
        raw[6][termios.VMIN], raw[6][termios.VTIME] = 0, 0
        termios.tcsetattr(fd, termios.TCSANOW, raw)
        try:
            chunks: list[bytes] = []
            while sum(map(len, chunks)) < limit:
                try:
                    chunk = os.read(fd, limit)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _any_fd_path(plan: SessionPlan) -> str | None:
    """A path that opens the old terminal itself (for termios), through a member's fd on it."""
    for member in [plan.leader, *plan.members]:
        for fd, tty in proc.fds_on(member.pid, {plan.old_terminal.rdev}).items():
            if tty == plan.old_terminal:
                return f"/proc/{member.pid}/fd/{fd}"
    return None


# -- after the move: a repaint that stops nobody ---------------------------------------------------


def repaint_by_resize(tty_path: str, foreground: list[int]) -> None:
    """Make the foreground job repaint: a size change the kernel reports with SIGWINCH, then the real
    size once it has been handled. (SIGTSTP would really stop a job whose shell came along.)"""
    fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        rows, cols, xpixel, ypixel = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
        narrower = cols - 1 if cols > 1 else cols + 1
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, narrower, xpixel, ypixel))
        _wait_handled(foreground, signal.SIGWINCH)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpixel, ypixel))
    finally:
        os.close(fd)


def _wait_handled(pids: list[int], signum: int) -> None:
    """Until every one of `pids` has taken `signum` and sleeps again (bounded)."""
    deadline = time.monotonic() + REPAINT_WAIT_S
    while time.monotonic() < deadline:
        if all(_handled(pid, signum) for pid in pids):
            return
        time.sleep(0.001)


def _handled(pid: int, signum: int) -> bool:
    try:
        status = proc.read_status(pid)
    except OSError:
        return True
    mask = proc.pending_signals(status)
    return not proc.has_signal(mask, signum) and status.get("State", "S")[:1] in "STt"
