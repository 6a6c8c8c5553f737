"""Look before touching: decide whether a target can be moved, and how, from /proc alone.

Every refusal here happens before the target is touched and says what to do instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import NamedTuple

from reptyr_tmux import proc
from reptyr_tmux.errors import Refusal, TargetGone
from reptyr_tmux.front_end import command_and_parent

MAX_PID_FILE = "/proc/sys/kernel/pid_max"
OUR_OWN = frozenset({"reptyr-holder", "memfd:reptyr-tm", "reptyr-relay"})  # holder, its waiter, relay


class Plan(NamedTuple):
    """What the engine will do to one target, decided before touching it."""

    pid: int
    stat: proc.Stat
    fds: list[int]  # the target's fds to point at the new terminal
    fd_flags: dict[int, int]  # the open flags (O_*, O_CLOEXEC) of each of those it has open
    old_ctty_fd: int | None  # an fd of the target open on its controlling tty
    old_tty: proc.Tty | None  # that controlling tty (None: it has none, or none of its fds is on it)
    missing_fds: set[int]  # -s: stdio fds the target has closed
    stop_first: bool  # send SIGTSTP so its shell gets the prompt back
    orphaned: bool
    force_stdio: bool = False

    @property
    def session_leader(self) -> bool:
        return self.stat.sid == self.pid

    @property
    def group_leader(self) -> bool:
        return self.stat.pgid == self.pid

    @property
    def has_ctty(self) -> bool:
        return self.stat.tty_dev is not None


def parse_pid(text: str) -> int:
    try:
        pid = int(text, 10)
    except ValueError:
        raise Refusal(f"'{text}' is not a process id: give a positive number such as 1234") from None
    if pid <= 0:
        raise Refusal(f"'{text}' is not a process id: process ids are positive numbers")
    with open(MAX_PID_FILE) as f:
        pid_max = int(f.read())
    if pid >= pid_max:
        raise Refusal(f"{pid} is larger than any process id this kernel hands out (pid_max is {pid_max})")
    return pid


def describe(stat: proc.Stat) -> str:
    """"1234 (name)" with the name made safe to print: it is whatever the process chose."""
    from reptyr_tmux.text import printable

    return f"{stat.pid} ({printable(stat.comm, 40)})"


def survey(pid: int, force_stdio: bool = False, stats: list[proc.Stat] | None = None) -> Plan:
    """Refuse what cannot or must not be moved; otherwise say how to move it.

    `stats` (every process's stat, from proc.all_stats) spares a scan when asking about many."""
    if pid == 1:
        raise Refusal("process 1 is init: it has no terminal to move and must never be stopped",
                      short="init")
    us, our_parent = command_and_parent()
    if pid in (us, os.getpid()):
        raise Refusal(f"process {pid} is this command itself")
    if pid == our_parent:
        raise Refusal(f"process {pid} is the shell or program that ran this command; "
                      "run it from another terminal")
    try:
        stat = proc.read_stat(pid)
        status = proc.read_status(pid)
    except FileNotFoundError:
        raise Refusal(f"no process {pid} exists; check the id with 'ps'", short="gone") from None
    try:
        return _survey(stat, status, force_stdio, stats or proc.all_stats())
    except Refusal:
        # Facts read while another reptyr-tmux moves it are half old, half new: say what is going on.
        busy = moved_by_another_of_us(pid)
        if busy:
            raise busy from None
        with contextlib.suppress(OSError):
            now = proc.read_stat(pid)
            if now.state not in ("Z", "X"):  # (a zombie is refused as such)
                refuse_changed_terminal(stat, now)
        raise


def _survey(stat: proc.Stat, status: dict[str, str], force_stdio: bool, stats: list[proc.Stat]) -> Plan:
    pid = stat.pid
    refuse_unmovable(stat, status)
    _refuse_other_pid_namespace(stat)
    refuse_shared_group(stat, stats)
    fds = _fd_facts(pid, stat, force_stdio)
    _refuse_other_foreground(stat, stats)
    refuse_stranded_members(stat, stats)
    orphaned = proc.is_orphaned_group(stat.pgid, stat.sid, stats)
    ignores_tstp = proc.has_signal(proc.signal_mask(status, "SigIgn"), signal.SIGTSTP)
    # A shell's job is stopped first so its shell takes the prompt back; an orphaned group would
    # ignore the stop (the kernel drops it), so it is not asked.
    stop_first = stat.tty_dev is not None and not orphaned and stat.state != "T" and not ignores_tstp
    return Plan(pid=pid, stat=stat, **fds, orphaned=orphaned, stop_first=stop_first, force_stdio=force_stdio)


def _fd_facts(pid: int, stat: proc.Stat, force_stdio: bool) -> dict:
    """Plan's fields about fds, as they are now."""
    fds, old_ctty_fd, old_tty = _terminal_fds(pid, stat, force_stdio)
    if not fds:
        raise Refusal(f"process {describe(stat)} has no terminal open (its fds point elsewhere); "
                      "use -s to attach its stdin, stdout and stderr anyway", short="no terminal open")
    missing = set(fds) - set(proc.open_fds(pid))
    return {"fds": fds, "old_ctty_fd": old_ctty_fd, "old_tty": old_tty, "missing_fds": missing,
            "fd_flags": {fd: _flags(pid, fd) for fd in fds if fd not in missing}}


def refuse_moved_meanwhile(surveyed: proc.Stat, held: proc.Stat) -> None:
    """A process held by us cannot change its session, group or terminal: if they differ from the survey's,
    someone moved it between the two looks — another reptyr-tmux, unless the program did it itself."""
    if held.state not in ("t", "T"):  # dying: only SIGKILL wakes a held process, and it lets go of its tty
        raise TargetGone(f"process {held.pid} exited while we were working on it")
    refuse_changed_terminal(surveyed, held)


def refuse_changed_terminal(before: proc.Stat, now: proc.Stat) -> None:
    """Refused when the session, group or terminal of the process changed between two looks."""
    if (now.sid, now.pgid, now.tty_nr) == (before.sid, before.pgid, before.tty_nr):
        return
    raise Refusal(f"process {describe(now)} was moved to {proc.tty_name(now.tty_dev)} (from "
                  f"{proc.tty_name(before.tty_dev)}) while this command got ready, most likely by another "
                  "reptyr-tmux; this one did nothing", short="moved meanwhile")


def look_again(plan: Plan) -> Plan:
    """The survey once more, now that the target is held (it can no longer fork, open, close or dup):
    what the move does is decided from these facts, which cannot change any more. Anything else that
    changed meanwhile (its session, group or terminal) was done by someone else: refused."""
    stat = proc.read_stat(plan.pid)
    refuse_moved_meanwhile(plan.stat, stat)  # (seccomp was asked again as it was held: infect)
    stats = proc.all_stats()
    # A child born since the survey would share the SIGHUP that giving up the old terminal sends to
    # its group, or lose its terminal with the leader.
    refuse_shared_group(stat, stats)
    refuse_stranded_members(stat, stats)
    return plan._replace(**_fd_facts(plan.pid, stat, plan.force_stdio))


def refuse_unmovable(stat: proc.Stat, status: dict[str, str]) -> None:
    who = describe(stat)
    if stat.flags & proc.PF_KTHREAD:
        raise Refusal(f"process {who} is a kernel thread: it has no terminal and cannot be traced",
                      short="kernel thread")
    if stat.state in ("Z", "X"):
        raise Refusal(f"process {who} has already exited (a zombie waiting for its parent); "
                      "there is nothing left to move", short="exited")
    if stat.state == "D" and _waits_for_vfork_child(stat.pid):
        raise Refusal(f"process {who} is in an uninterruptible wait (state D) for the child it vforked, "
                      "which has not started its program yet; it cannot be stopped until that child execs or "
                      "exits: try again then", short="uninterruptible (vfork)")
    if stat.comm in OUR_OWN:
        raise Refusal(f"process {who} is reptyr-tmux's own pane process (it holds a pane for an adopted "
                      "program); adopt that program instead", short="reptyr-tmux's own")
    refuse_seccomp(stat, status)
    tracer = _tracer_not_us(stat.pid, int(status.get("TracerPid", "0")))
    if tracer:
        raise Refusal(f"process {who} is already being traced by process {tracer} (a debugger or "
                      "strace); detach that first", short=f"traced by {tracer}")
    uids = [int(u) for u in status.get("Uid", "0 0 0 0").split()]
    me = os.geteuid()
    if me != 0 and me not in uids[:2]:
        raise Refusal(f"process {who} belongs to user id {uids[0]}, not to you (uid {me}); "
                      "run this as that user or as root", short="another user's")
    if not traceable_by_us(stat, status):
        raise Refusal(f"not allowed to trace process {who}: it runs setuid or setgid, or its program may "
                      "not be read (Linux shows such a process as root's); run this as root",
                      short="setuid: root only")


def refuse_seccomp(stat: proc.Stat, status: dict[str, str]) -> None:
    """Strict mode (1) kills a process for any syscall but read, write and exit; a filter (2) may kill it
    for one of ours. Either can begin with an exec between the survey and the hold: asked again then."""
    mode = status.get("Seccomp", "0")
    if mode != "0":
        kind = "seccomp's strict mode" if mode == "1" else "a seccomp filter"
        raise Refusal(f"process {describe(stat)} runs under {kind}, which may kill it for a syscall we "
                      "would make it run; it cannot be moved safely", short="seccomp: unsafe")


# Where the kernel shows a parent blocked in vfork() (/proc/PID/wchan), by kernel version.
VFORK_WAITS = {"kernel_clone", "_do_fork", "do_fork", "wait_for_vfork_done"}


def _waits_for_vfork_child(pid: int) -> bool:
    """A vfork parent sleeps uninterruptibly until its child execs or exits, however long that takes; other
    waits in state D (a disk, NFS) are short, and infect waits them out (bounded)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read().strip() in VFORK_WAITS
    except OSError:
        return False


def traceable_by_us(stat: proc.Stat, status: dict[str, str]) -> bool:
    """What ptrace asks of a user who is not root: every uid and gid of the process ours, and the
    process dumpable (one that changed identity, setuid or setgid, shows in /proc as root's)."""
    me = os.getuid()
    if me == 0:
        return True
    uids = {int(u) for u in status.get("Uid", "").split()[:3]}
    gids = {int(g) for g in status.get("Gid", "").split()[:3]}
    return uids == {me} and gids == {os.getgid()} and proc.uid_of(stat.pid) in (me, None)


def moved_by_another_of_us(pid: int, tracer: int | None = None) -> Refusal | None:
    """The refusal to give when `pid` is traced by another reptyr-tmux (its engine holds it now), else
    None. Only we or root can trace a process of ours, so the tracer's command line is not a stranger's
    word."""
    try:
        tracer = tracer or int(proc.read_status(pid).get("TracerPid", "0"))
    except (OSError, ValueError):
        return None
    if not tracer or proc.uid_of(tracer) not in (os.geteuid(), 0) or not _is_us(proc.cmdline(tracer)):
        return None
    return Refusal(f"another reptyr-tmux (process {tracer}) is moving process {pid} right now; this one did "
                   "nothing. Wait for it to finish, then look where the program went", short="being moved")


def _tracer_not_us(pid: int, tracer: int) -> int:
    """The tracer of `pid` if it is not another reptyr-tmux (refused as such), 0 if none. Looked at
    twice: a tracer that lets go while we read its command line (another reptyr-tmux finishing) is
    none; what it did is seen once we hold the target (look_again)."""
    for _ in range(2):
        if not tracer:
            return 0
        busy = moved_by_another_of_us(pid, tracer)
        if busy:
            raise busy
        try:
            tracer, before = int(proc.read_status(pid).get("TracerPid", "0")), tracer
        except OSError:
            return 0
        if tracer == before and proc.cmdline(tracer):
            return tracer
    return tracer


def _is_us(argv: list[str]) -> bool:
    return any(os.path.basename(word) == "reptyr-tmux" or word == "reptyr_tmux" for word in argv[:3])


def _refuse_other_pid_namespace(stat: proc.Stat) -> None:
    """The move passes pids we read from /proc (our namespace's numbers) into the target (setpgid,
    TIOCSPGRP): inside another pid namespace they would name other processes, or none."""
    try:
        same = proc.same_namespace(stat.pid, "pid")
    except OSError:
        return  # not ours to look at: tracing it is refused just as clearly
    if not same:
        raise Refusal(f"process {describe(stat)} runs in another pid namespace (a container); "
                      "run reptyr-tmux inside it")


def refuse_shared_group(stat: proc.Stat, stats: list[proc.Stat]) -> None:
    others = [s for s in proc.group_members(stat.pgid, stats) if s.pid != stat.pid]
    if others:
        raise Refusal(f"process {describe(stat)} shares its process group with {_names(others)}; moving "
                      "it alone would split that job. Move the whole terminal session instead (adopt --mode "
                      "session), or pick the job's top process once the others have finished",
                      short="shares its job")


def refuse_stranded_members(stat: proc.Stat, stats: list[proc.Stat]) -> None:
    """A session leader with other live processes on its terminal (a shell after `sleep 1000 &`): its
    giving up the terminal (TIOCNOTTY) takes it from every one of them, for good (Linux gives it back to
    none: `fg` cannot help), whether the move then succeeds or is undone."""
    if stat.sid != stat.pid or stat.tty_dev is None:
        return
    others = [s for s in stats if s.sid == stat.sid and s.pid != stat.pid and s.tty_nr == stat.tty_nr
              and s.state not in ("Z", "X")]
    if others:
        raise Refusal(f"process {describe(stat)} leads a terminal session that has other processes "
                      f"({_names(others)}); moving it alone would take the terminal from its other "
                      "processes. Use 'reptyr-tmux adopt' (session mode: --mode session) to move the whole "
                      "session instead", short="has jobs: adopt it")


def _names(stats: list[proc.Stat]) -> str:
    return ", ".join(describe(s) for s in stats[:5]) + (" ..." if len(stats) > 5 else "")


def _refuse_other_foreground(stat: proc.Stat, stats: list[proc.Stat]) -> None:
    """A session leader (a shell) whose terminal's foreground is another job: giving up the terminal
    would hang that job up."""
    job = front_job(stat, stats)
    if job is None and _fronted_by_another_group(stat):
        # A job that has just ended: the shell reaps it before taking its terminal back, and a look
        # in between sees a foreground group with no one left in it. Look once more; a group still
        # empty is the shell's own moment, not a job to hang up.
        try:
            stat = proc.read_stat(stat.pid)
        except OSError:
            return  # gone: the move itself will say so
        job = front_job(stat, stats)
    if job is None:
        return
    raise Refusal(f"process {describe(stat)} leads its terminal's session while another job "
                  f"({describe(job)}) runs in its foreground; moving it alone would "
                  "hang that job up. Move the whole session instead (adopt --mode session)",
                  short="a job runs in its foreground")


def front_job(stat: proc.Stat, stats: list[proc.Stat]) -> proc.Stat | None:
    """A living member of the other job in the foreground of the terminal this session leader leads,
    or None. A group that is not in `stats` may have started since: its leader is read afresh."""
    if not _fronted_by_another_group(stat):
        return None
    job = next((s for s in stats if s.pgid == stat.tpgid and s.state not in "ZX"), None)
    if job is None:
        try:
            job = proc.read_stat(stat.tpgid)
        except OSError:
            return None
    return job if job.pgid == stat.tpgid and job.state not in "ZX" else None


def _fronted_by_another_group(stat: proc.Stat) -> bool:
    return stat.sid == stat.pid and stat.tty_dev is not None and stat.tpgid not in (-1, 0, stat.pgid)


def _terminal_fds(pid: int, stat: proc.Stat, force_stdio: bool
                  ) -> tuple[list[int], int | None, proc.Tty | None]:
    """The fds to move, the first one on its controlling terminal, and that terminal.

    /proc names the controlling terminal by device number only, which repeats in every devpts
    instance: fds on a namesake from another instance (a container's pts) must never be moved, and
    when its fds disagree there is no telling which one is its terminal."""
    # /dev/tty is the controlling terminal itself; /dev/console is it only when the console is (else
    # a write-only console fd, a log, would become a pty).
    wanted = {stat.tty_dev, proc.DEV_TTY}
    if stat.tty_dev is not None and stat.tty_dev in proc.console_devices() | {proc.DEV_CONSOLE}:
        wanted.add(proc.DEV_CONSOLE)
    found = proc.fds_on(pid, {d for d in wanted if d is not None})
    on_ctty = {fd: tty for fd, tty in found.items() if tty.rdev == stat.tty_dev}
    fds = sorted(found)
    instances = set(on_ctty.values())
    if len(instances) > 1:
        raise Refusal(f"process {describe(stat)} has fds on {len(instances)} different terminals that "
                      f"are all called {proc.tty_name(stat.tty_dev)} (from different devpts instances, "
                      "e.g. a container's), so which one is its terminal cannot be told; it is not moved")
    if force_stdio:
        fds = sorted(set(fds) | {0, 1, 2})
    return fds, min(on_ctty, default=None), instances.pop() if instances else None


def _flags(pid: int, fd: int) -> int:
    try:
        return proc.fd_flags(pid, fd)
    except OSError:
        return 0


def check_tty_free(tty_path: str, stats: list[proc.Stat] | None = None) -> None:
    """Refuse a destination that is another session's controlling terminal (TIOCSCTTY would fail).

    TIOCGSID answers only for one's own terminal, so look for any process whose stat and fds name it.
    """
    try:
        st = os.stat(tty_path)
    except OSError as e:
        raise Refusal(f"cannot use the new terminal {tty_path}: {e.strerror}") from None
    if not _is_terminal(tty_path):
        raise Refusal(f"{tty_path} is not a terminal device")
    wanted = proc.tty_of_stat(st)
    # Only a process known to be on this very terminal counts: one on a namesake in another devpts
    # instance (a container's pts with the same number) does not hold ours.
    stats = stats or proc.all_stats()
    holders = [s for s in stats if s.tty_dev == st.st_rdev and proc.session_tty(s, stats) == wanted]
    if holders:
        leader = min(holders, key=lambda s: (s.pid != s.sid, s.pid))
        raise Refusal(f"{tty_path} is already the controlling terminal of session {leader.sid} "
                      f"(process {describe(leader)}); that session must release it first")


def _is_terminal(path: str) -> bool:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return os.isatty(fd)
    finally:
        os.close(fd)


def _on_its_leaders_terminal(stat: proc.Stat, stats: list[proc.Stat]) -> bool:
    """A job that was running when its session moved: no controlling terminal, but its fds are on its
    session leader's terminal."""
    leader = next((s for s in stats if s.pid == stat.sid and s.pid != stat.pid), None)
    return bool(leader and leader.tty_dev is not None and proc.fds_on(stat.pid, {leader.tty_dev}))


def choose_mode(pid: int, requested: str, force_stdio: bool, stats: list[proc.Stat] | None = None
                ) -> tuple[str, str]:
    """attach (the process alone, zero-copy), session (its whole terminal session onto the pane's own
    pty) or steal (the session keeps its pty; a relay takes the master), and why."""
    if requested in ("attach", "session", "steal"):
        return requested, "asked for"
    try:
        stat = proc.read_stat(pid)
    except OSError:
        raise Refusal(f"no process {pid} exists; check the id with 'ps'", short="gone") from None
    stats = stats or proc.all_stats()
    if stat.tty_dev is None and not force_stdio and _on_its_leaders_terminal(stat, stats):
        return "session", ("its session moved before (Linux left it no controlling terminal), so the "
                           "session moves again")
    if stat.tty_dev is None or force_stdio:
        return "attach", "it has no terminal of its own, so it moves by itself"
    company = [s for s in stats if s.pid != pid and (s.pgid == stat.pgid or s.ppid == pid
                                                     or (stat.sid == pid and s.sid == pid))]
    job = front_job(stat, stats)  # a shell's job started since `stats` was read is company too
    company += [job] if job and job.pid not in {s.pid for s in company} else []
    if company:
        return "session", (f"it has company ({', '.join(describe(s) for s in company[:3])}"
                           f"{' ...' if len(company) > 3 else ''}), so its whole session moves")
    shell = next((s for s in stats if s.pid == stat.ppid and s.sid == stat.sid and s.pgid != stat.pgid), None)
    if shell:
        return "session", (f"its shell {describe(shell)} would hang it up when the old terminal closes, "
                           "so the shell moves with it")
    return "attach", "it is alone on its terminal, so it moves by itself"
