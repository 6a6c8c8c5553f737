"""Move one process onto another terminal: the algorithm, one step a line, one undo per step.

Only `setsid` has no undo (Linux offers no way back into a session). Everything it depends on is
checked first, and it runs right before TIOCSCTTY; if a later step fails, the target gets its fds,
signal dispositions, registers and memory back and keeps working on its old terminal, in a session of
its own (its ^C then no longer comes from the old terminal).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import termios
import time
from typing import TYPE_CHECKING, NamedTuple

from reptyr_tmux import proc
from reptyr_tmux.engine.survey import Plan, check_tty_free, look_again, survey
from reptyr_tmux.engine.target_fds import kind_of, open_in_target, open_per_kind, other_view, park, same_file
from reptyr_tmux.engine.transaction import Transaction, signals_held
from reptyr_tmux.errors import Refusal, ReptyrError, TargetGone

if TYPE_CHECKING:
    from reptyr_tmux.engine.remote import RemoteProcess

TIOCSCTTY, TIOCNOTTY, TIOCSPGRP = termios.TIOCSCTTY, termios.TIOCNOTTY, termios.TIOCSPGRP
WNOHANG, WALL = 1, 0x40000000
STOP_WAIT_S = 1.0

# Layout of the scratch page lent by the target.
SIGHUP_AT, SIGCONT_AT, PGRP_AT = 1024, 1280, 1536  # (target_fds uses 0 and 3072 on)


class Attached(NamedTuple):
    pid: int
    old_tty: str
    new_tty: str
    fds: list[int]
    new_session: bool
    stopped_job: bool
    steps: list[str]
    own_sighup: bytes | None = None  # kept ignored (keep_sighup_ignored): the action to give back later
    old_shell: int | None = None  # the shell whose hangup it is kept from


def attach(pid: int, tty_path: str, force_stdio: bool = False, verbose: bool = False,
           keep_sighup_ignored: bool = False) -> Attached:
    """Make `tty_path` the controlling terminal of `pid` and point its terminal fds at it.

    keep_sighup_ignored: a job of a shell left on the old terminal stays with SIGHUP ignored (that shell
    hangs its jobs up when its terminal closes); the caller gives the action back (set_disposition)
    once that shell is gone, or before the new terminal goes away."""
    stats = proc.all_stats()  # one look at every process serves both checks
    plan = survey(pid, force_stdio, stats)
    check_tty_free(tty_path, stats)
    _refuse_other_view(pid, tty_path)
    shell = _old_shell(plan, stats) if keep_sighup_ignored else None
    tx = Transaction(verbose)
    # Held to the end: a SIGTERM to us (our front end died, closing the new terminal) during the last
    # cleanups must not end us before the hangup it caused is passed on below.
    with signals_held():
        try:
            with tx:
                own_sighup, moved_fds = _move(tx, plan, tty_path, keep_sighup_ignored=shell is not None)
        except ReptyrError as e:
            if not isinstance(e, TargetGone):  # a dead target needs no undoing
                e.args = (_what_is_left(e.args[0], pid, tx),)
            raise
        if _hung_up(tty_path):  # closed right after the move, while SIGHUP was still ignored: pass it on
            _send(pid, signal.SIGHUP)
    stopped_job = "stop-job" in tx.steps_done
    _send(pid, signal.SIGWINCH)
    if stopped_job:
        _stopped_again(pid)  # the kernel tells the shell of a SIGCONT only if it wakes a stopped process
        ran = proc.cpu_time_ns(pid)
        _send(pid, signal.SIGCONT)
        _until_the_shell_has_seen_it_continue(pid, ran, plan.stat.ppid)
    elif plan.stat.state == "T":
        _send(pid, signal.SIGCONT)
    return Attached(pid=pid, old_tty=proc.tty_name(plan.stat.tty_dev), new_tty=tty_path, fds=moved_fds,
                    new_session=not plan.session_leader, stopped_job=stopped_job, steps=tx.steps_done,
                    own_sighup=own_sighup if shell else None, old_shell=shell)


def _what_is_left(error: str, pid: int, tx: Transaction) -> str:
    """The error, and what the program was left with when not everything could be given back."""
    if tx.undo_errors:
        error = f"{error} (and could not undo: {'; '.join(tx.undo_errors)})"
    if "setsid" in tx.steps_done:  # (not quite "as it was", then)
        for as_it_was in ("; the target was left as it was", "; the process was left as it was"):
            error = error.removesuffix(as_it_was)
        error += (f"; process {pid} keeps running on its old terminal, but in a session of its own (Linux "
                  "cannot undo setsid), so ^C and ^Z typed there no longer reach it: signal it by its pid "
                  f"instead (kill -INT {pid})")
    return error


def _stopped_again(pid: int, limit_s: float = 0.5) -> None:
    """The job stopped for the move may be running again once let go (ptrace resumes it); then our SIGCONT
    would wake nothing and its shell, never told, would hold it for stopped for good."""
    with contextlib.suppress(OSError):
        if proc.read_stat(pid).state != "T":
            _stop(pid, signal.SIGSTOP, limit_s)


def _until_the_shell_has_seen_it_continue(job: int, ran_ns: int | None, shell: int, limit_s: float = 0.5
                                          ) -> None:
    """The shell learns of our SIGCONT by a SIGCHLD. Until it has taken that, it holds the job for
    stopped, and a hangup then (its ssh connection dropping) makes bash end its stopped jobs with
    SIGTERM (seen 1 time in 6 when a test dropped the connection right at the prompt). The kernel sends
    that SIGCHLD from the job itself, the first time it runs after the SIGCONT: so first until the job
    has run (its CPU time, `ran_ns` before, has grown), then until the shell has none pending."""
    deadline = time.monotonic() + limit_s
    while ran_ns is not None and time.monotonic() < deadline:
        now = proc.cpu_time_ns(job)
        if now is None or now != ran_ns:
            break  # it has run (or is gone)
        time.sleep(0.0005)
    while time.monotonic() < deadline:
        try:
            if not proc.signal_pending(shell, signal.SIGCHLD):
                return
        except (OSError, KeyError):
            return  # the shell is gone
        time.sleep(0.001)


def _old_shell(plan: Plan, stats: list[proc.Stat]) -> int | None:
    """The shell (its parent, in its session, leading another group) whose job the target is."""
    parent = next((s for s in stats if s.pid == plan.stat.ppid), None)
    if parent and parent.sid == plan.stat.sid and parent.pgid != plan.stat.pgid:
        return parent.pid
    return None


def _move(tx: Transaction, plan: Plan, tty_path: str, keep_sighup_ignored: bool = False
          ) -> tuple[bytes, list[int]]:
    """The steps; returns the SIGHUP action it had and the fds that were moved."""
    # ptrace's modules load only in the engine's own process (worker.py warms them while the pane opens)
    from reptyr_tmux.engine.remote import RemoteProcess, hold_other_threads, release_threads

    pid = plan.pid
    watch = watch_new_tty(tx, tty_path)
    tx.step("copy-termios", lambda: _copy_termios(plan, tty_path), restore_termios(tty_path))
    if plan.stop_first:
        tx.step("stop-job", lambda: _stop_job(pid), lambda _: _send(pid, signal.SIGCONT))
    target = tx.step("infect", lambda: RemoteProcess.infect(pid), lambda t: t.cure(), always=True)
    tx.step("hold-threads", lambda: hold_other_threads(pid), release_threads, always=True)
    # From here on it cannot fork, open, close or dup: what is moved is decided from what it has now.
    plan = tx.step("look-again", lambda: look_again(plan))
    page = tx.step("map-scratch", target.map_page, target.unmap_page, always=True)
    own_sighup = tx.step("ignore-sighup", lambda: target.ignore_signal(signal.SIGHUP, page + SIGHUP_AT),
                         lambda old: target.restore_signal(signal.SIGHUP, old, page + SIGHUP_AT),
                         always=not keep_sighup_ignored)
    fd_flags = {fd: plan.fd_flags.get(fd, os.O_RDWR) for fd in plan.fds}  # (-s: a closed fd gets O_RDWR)
    new_fds = open_per_kind(tx, target, page, tty_path, fd_flags, readable=True)
    new_fd = new_fds[os.O_RDWR]
    saved = {fd: tx.step(f"save-fd-{fd}", lambda fd=fd: park(target, fd),
                         lambda copy: target.syscall("close", copy), always=True)
             for fd in plan.fds if fd not in plan.missing_fds}
    if plan.session_leader and plan.has_ctty:
        old_fd = _old_ctty_fd(tx, target, plan)
        tx.step("release-old-ctty", lambda: _give_up_ctty(target, page, old_fd),
                lambda _: _retake_ctty(target, page, old_fd, plan.stat.tpgid))
    elif not plan.session_leader:
        if plan.group_leader:
            _leave_own_group(tx, target)
        tx.step("setsid", lambda: target.syscall("setsid"))  # one way: see the module's docstring
    tx.step("set-ctty", lambda: target.syscall("ioctl", new_fd, TIOCSCTTY, 0),
            lambda _: _give_up_ctty(target, page, new_fd))
    for fd in plan.fds:
        flags, new = fd_flags[fd] & os.O_CLOEXEC, new_fds[kind_of(fd_flags[fd])]
        tx.step(f"dup-over-{fd}", lambda fd=fd, flags=flags, new=new: target.syscall("dup3", new, fd, flags),
                lambda _, fd=fd, flags=flags: _put_back(target, saved, fd, flags))
    # Last: the new terminal must still be there (its tmux pane or server may have died meanwhile);
    # if not, everything above is undone rather than leaving the program on a dead terminal.
    tx.step("check-new-tty", lambda: still_there(watch, tty_path))
    return own_sighup, plan.fds


def watch_new_tty(tx: Transaction, tty_path: str) -> int:
    """Step: our own fd on the new terminal, held through the move: it sees what happens to that very pty."""
    return tx.step("watch-new-tty", lambda: _open_watch(tty_path), os.close, always=True)


def _open_watch(tty_path: str) -> int:
    try:
        return os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise _gone(tty_path, f" ({e.strerror})") from None


def still_there(watch: int, tty_path: str) -> None:
    # Once the master is closed the kernel hangs up every open fd of the slave, and poll says POLLHUP
    # (a new open of the path fails too, but a fd held from the start needs no lookup).
    poller = select.poll()
    poller.register(watch, select.POLLOUT)
    if any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0)):
        raise _gone(tty_path, "")


def _hung_up(tty_path: str) -> bool:
    try:
        watch = _open_watch(tty_path)
    except ReptyrError:
        return True
    try:
        still_there(watch, tty_path)
        return False
    except ReptyrError:
        return True
    finally:
        os.close(watch)


def _gone(tty_path: str, why: str) -> ReptyrError:
    return ReptyrError(f"the new terminal {tty_path} went away while the process was moving to it{why}: "
                       "its pane or tmux server closed; the process was left as it was")


def _put_back(target: RemoteProcess, saved: dict[int, int], fd: int, flags: int) -> None:
    if fd in saved:
        target.syscall("dup3", saved[fd], fd, flags)
    else:  # -s on a target that had this fd closed: close it again
        target.syscall("close", fd)


class Dummy(NamedTuple):
    """The short-lived child a group leader needs to leave its group."""

    remote: RemoteProcess  # held by its pid in our namespace (ptrace's clone event says which)
    pid_inside: int  # its pid as the target numbers it (clone's result): for syscalls run in there


def _leave_own_group(tx: Transaction, target: RemoteProcess) -> None:
    """setsid() refuses a group leader: move it into a fresh group made by a short-lived dummy child."""
    dummy = tx.step("fork-dummy", lambda: _fork_dummy(target), lambda d: _end_dummy(target, d), always=True)
    tx.step("dummy-own-group", lambda: dummy.remote.syscall("setpgid", 0, 0))
    tx.step("join-dummy-group", lambda: target.syscall("setpgid", 0, dummy.pid_inside),
            lambda _: _lead_own_group_again(tx, target))


def _lead_own_group_again(tx: Transaction, target: RemoteProcess) -> None:
    if "setsid" in tx.steps_done:
        return  # setsid made it the leader of a group of its own again (pgid = pid), in a new session
    target.syscall("setpgid", 0, 0)


def _fork_dummy(target: RemoteProcess) -> Dummy:
    # clone with no flags and exit signal 0: a plain copy whose death sends the target no SIGCHLD.
    # Its pid in our namespace comes from ptrace's clone event, not from clone's result: in another
    # pid namespace that number names some other process here, or none.
    target.follow_clones(True)
    try:
        pid_inside = target.syscall("clone", 0, 0, 0, 0, 0)
    finally:
        target.follow_clones(False)
    return Dummy(type(target).adopt_child(target.take_clone(), target), pid_inside)


def _end_dummy(target: RemoteProcess, dummy: Dummy) -> None:
    dummy.remote.kill()
    for _ in range(100):  # reap it in the target, never blocking the target
        reaped = target.raw_syscall("wait4", dummy.pid_inside, 0, WNOHANG | WALL, 0)
        if reaped != 0:
            return  # reaped, or ECHILD because the target auto-reaps children
        time.sleep(0.001)


def _old_ctty_fd(tx: Transaction, target: RemoteProcess, plan: Plan) -> int:
    if plan.old_ctty_fd is not None:
        return plan.old_ctty_fd
    return tx.step("open-dev-tty", lambda: open_in_target(target, None, "/dev/tty"),
                   lambda fd: target.syscall("close", fd), always=True)


def _give_up_ctty(target: RemoteProcess, page: int, fd: int) -> None:
    """TIOCNOTTY as session leader. The kernel then sends SIGHUP and SIGCONT to the terminal's
    foreground group, i.e. to the target: they wait, blocked; drop the SIGCONT here (SIGHUP is
    dropped when its disposition is put back) so nothing of ours reaches the program. (Ignoring a
    signal discards its pending instances.)"""
    target.syscall("ioctl", fd, TIOCNOTTY, 0)
    target.discard_pending(signal.SIGCONT, page + SIGCONT_AT)


def _retake_ctty(target: RemoteProcess, page: int, old_fd: int, foreground_pgrp: int) -> None:
    target.syscall("ioctl", old_fd, TIOCSCTTY, 0)
    if foreground_pgrp > 0:
        target.write(page + PGRP_AT, foreground_pgrp.to_bytes(4, "little"))
        target.raw_syscall("ioctl", old_fd, TIOCSPGRP, page + PGRP_AT)


def _copy_termios(plan: Plan, tty_path: str) -> list | None:
    if plan.old_ctty_fd is None:
        return None  # /dev/pts/N by name could be a namesake in another devpts instance
    return copy_termios(f"/proc/{plan.pid}/fd/{plan.old_ctty_fd}", tty_path)


def copy_termios(source: str | None, tty_path: str) -> list | None:
    """Give the new terminal the settings of the one at `source`; return the new one's own, for the
    undo (None: nothing changed, e.g. the old one is not readable by us)."""
    if source is None:
        return None
    try:
        attrs = _tcgetattr_path(source)
    except OSError:
        return None  # not readable by us: the new terminal keeps its defaults
    fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        previous = termios.tcgetattr(fd)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        return previous
    finally:
        os.close(fd)


def restore_termios(tty_path: str):
    def undo(previous: list | None) -> None:
        if previous is None:
            return
        fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            termios.tcsetattr(fd, termios.TCSANOW, previous)
        finally:
            os.close(fd)
    return undo


def _tcgetattr_path(path: str) -> list:
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        return termios.tcgetattr(fd)
    finally:
        os.close(fd)


def _stop_job(pid: int) -> bool:
    """SIGTSTP the target so the shell that started it takes its terminal back; wait until stopped,
    and until that shell has seen the stop (it takes the terminal back). The kernel's wait reports a
    stop only while the process is still stopped: a SIGCONT before the shell asked (ours, after the
    move; a busy machine delays the shell that long) leaves it "continued" only, and the shell keeps
    waiting for its foreground job, its prompt never back, or holds it for stopped."""
    stopped = _stop(pid, signal.SIGTSTP, STOP_WAIT_S)
    if stopped:
        _until_the_shell_has_the_terminal(pid, STOP_WAIT_S)
    return stopped


def _until_the_shell_has_the_terminal(pid: int, limit_s: float) -> None:
    """Wait while `pid`'s group is still its terminal's foreground group and its parent is a job
    control shell of its session (one that takes the terminal back from a stopped job)."""
    stat = proc.read_stat(pid)
    try:
        parent = proc.read_stat(stat.ppid)
    except OSError:
        return
    if parent.sid != stat.sid or parent.pgid == stat.pgid:
        return  # not a job-control shell's job: nobody will take the terminal
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if proc.read_stat(pid).tpgid != stat.pgid:
                return
        except OSError:
            return
        time.sleep(0.0005)


def _stop(pid: int, signum: int, limit_s: float) -> bool:
    """Send `signum` and wait (at most limit_s) until the kernel shows `pid` stopped."""
    os.kill(pid, signum)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.read_stat(pid).state == "T":
            return True
        time.sleep(0.0005)
    return False


def _refuse_other_view(pid: int, tty_path: str) -> None:
    """Before touching it: does the target's view of the path (its root, its mounts) lead to our
    terminal? (open_ours_in_target proves it again on the fd, race-free.)"""
    if not same_file(f"/proc/{pid}/root{tty_path}", tty_path):
        raise Refusal(other_view(pid, tty_path))


def _send(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
