"""Bystanders and namespaces: pty numbers repeat in every devpts instance (containers), a target may see
another /dev/pts, or live in another pid namespace. Whoever was not picked is never touched."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLI, ECHO, VICTIMS, Spawner, Tmux, wait_for
from test_faults import JOB_STEPS, refused_untouched, snapshot
from test_steal import SshdLike

from reptyr_tmux import proc
from reptyr_tmux.engine import attach as attach_module
from reptyr_tmux.engine import survey
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.errors import InjectedFault, Refusal

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unshare -m and mount need root")
OTHER_VIEW = "sees another /dev/pts (a container or chroot)"


class Bystander:
    """devpts_bystander.py: a process in its own devpts instance holding masters of ptys whose numbers
    collide with the host's, each with a child on its slave (named like our pane holder)."""

    def __init__(self) -> None:
        argv = ["unshare", "-m", "--propagation", "private", sys.executable,
                str(VICTIMS / "devpts_bystander.py")]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.process.pid
        self.instance = int(self.ask("", "ready").split()[1])
        self.children: dict[int, int] = {}

    def ask(self, request: str, answer: str) -> str:
        if request:
            self.process.stdin.write(request + "\n")
            self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.startswith(answer), f"the bystander answered {line!r} to {request!r}"
        return line

    def hold(self, index: int, via: str = "ptmx") -> int:
        child = int(self.ask(f"hold {index} {via}", "held").split()[2])
        self.children[index] = child
        wait_for(lambda: proc.read_stat(child).comm == "reptyr-holder", what="the child on its pty")
        return child

    def answers(self, index: int) -> bool:
        """Its master still works: a line written through it comes back from the child on the slave."""
        return self.ask(f"ping {index}", "pong") == f"pong {index}\n"

    def pids(self) -> list[int]:
        return [self.pid, *self.children.values()]

    def state(self) -> dict:
        """What must not change: every fd and what it points at (the very file), and how often each
        process woke up (a process blocked in read that nobody touches does not wake at all)."""
        return wait_for(lambda: _stable(lambda: {pid: _untouched_facts(pid) for pid in self.pids()}),
                        what="the bystander to sit still")

    def close(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


def _untouched_facts(pid: int) -> tuple:
    status = proc.read_status(pid)
    fds = {}
    for fd in proc.open_fds(pid):
        st = os.stat(f"/proc/{pid}/fd/{fd}")
        fds[fd] = (proc.fd_target(pid, fd), st.st_dev, st.st_ino, st.st_rdev)
    return (fds, status["voluntary_ctxt_switches"], status["nonvoluntary_ctxt_switches"],
            status["TracerPid"], proc.read_stat(pid).state)


def _stable(look):
    first = look()
    time.sleep(0.05)
    return first if look() == first else None


@pytest.fixture
def bystander():
    someone = Bystander()
    yield someone
    someone.close()


@pytest.fixture
def sshd(tmp_path):
    holder = SshdLike(tmp_path)
    yield holder
    holder.close()


def adopt(tmux: Tmux, pid: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", *extra, str(pid)],
                          capture_output=True, text=True, timeout=30, env=env)


def pts_index_of(pid: int) -> int:
    return proc.pts_index(proc.read_stat(pid).tty_dev)


# -- the kernel's rule for a master's devpts instance, checked by experiment --------------------------

def _in_a_chroot() -> bool:
    """Our root is not init's (by inode and device), or CI says so where init's root is not readable."""
    if os.environ.get("REPTYR_TMUX_IN_CHROOT"):
        return True
    try:
        return os.stat("/")[1:3] != os.stat("/proc/1/root")[1:3]
    except OSError:
        return False


IN_A_CHROOT = _in_a_chroot()


@pytest.mark.skipif(IN_A_CHROOT, reason="in a chroot, a process that unshares its mounts sees paths from "
                    "the host's root: the rule cannot be read by path there")
def test_master_instance_follows_the_kernels_rule(spawn, bystander):
    victim = spawn.on_pty(ECHO)
    colliding = pts_index_of(victim.pid)
    by_ptmx = bystander.hold(colliding, "ptmx")
    by_pts_ptmx = bystander.hold(colliding + 1, "pts-ptmx")
    host = proc.tty_of_path(f"/dev/pts/{colliding}")
    masters = {proc.tty_index(bystander.pid, fd): fd for fd in proc.open_fds(bystander.pid)
               if proc.tty_index(bystander.pid, fd) is not None}
    assert proc.fd_target(bystander.pid, masters[colliding]) == "/dev/ptmx"
    assert proc.fd_target(bystander.pid, masters[colliding + 1]) == "/dev/pts/ptmx"
    for index, child in ((colliding, by_ptmx), (colliding + 1, by_pts_ptmx)):
        theirs = proc.tty_of_fd(child, 0)
        assert theirs.instance == bystander.instance != host.instance
        assert proc.master_tty(bystander.pid, masters[index]) == theirs
    assert proc.master_tty(os.getpid(), victim.term.master) == host  # ours, through /dev/ptmx
    assert proc.ctty_of(by_ptmx, proc.read_stat(by_ptmx)) == proc.tty_of_fd(by_ptmx, 0) != host

    # A devpts mounted over /dev/pts since: the /dev/ptmx rule now names the wrong instance, which
    # the kernel itself (TIOCGPTPEER on a copy) refuses to confirm; a /dev/pts/ptmx master is unaffected.
    from reptyr_tmux.engine.steal import _kernel_agrees

    bystander.ask("stack", "stacked")
    misread = proc.master_tty(bystander.pid, masters[colliding])
    assert misread != proc.tty_of_fd(by_ptmx, 0)
    assert not _kernel_agrees(bystander.pid, masters[colliding], misread)
    assert _kernel_agrees(bystander.pid, masters[colliding + 1], proc.tty_of_fd(by_pts_ptmx, 0))
    assert bystander.answers(colliding) and bystander.answers(colliding + 1)


# -- bystanders through adopt, steal, re-adopt, --check, the free check --------------------------------

def test_attach_and_readopt_leave_a_colliding_bystander_alone(spawn, tmux, bystander):
    victim = spawn.on_pty(ECHO)
    old = pts_index_of(victim.pid)
    bystander.hold(old)
    result = adopt(tmux, victim.pid, "--mode", "attach")
    assert result.returncode == 0, result.stderr
    first_pane = pts_index_of(victim.pid)
    bystander.hold(first_pane)  # a "reptyr-holder" with fd 0 on its own pts/N, N = the first pane's
    before = bystander.state()
    result = adopt(tmux, victim.pid, "--mode", "attach")  # re-adopt: our old holder retires, not it
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(tmux.windows()) == 2, what="the first adoption's window to close")
    tmux("send-keys", "-t", f"main:{tmux.windows()[-1]}", "moved twice", "Enter")
    tmux.wait_screen(f"main:{tmux.windows()[-1]}", "got: moved twice")
    assert bystander.state() == before
    assert bystander.answers(old) and bystander.answers(first_pane)


def test_session_move_and_readopt_leave_a_colliding_bystander_alone(sshd, tmux, bystander):
    """auto mode moves a shell's job with its whole session; the bystander holds the masters of the
    session's old pts/N and, with a child named like our holder, of the first pane's pts/M."""
    sshd.type(0, "bash -c 'while :; do echo session-tick; sleep 0.2; done'")
    sshd.wait_log(0, "session-tick")
    job = sshd.job(0)
    old = pts_index_of(job)
    bystander.hold(old)
    result = adopt(tmux, job)
    assert result.returncode == 0 and "session mode" in result.stdout + result.stderr, result.stderr
    tmux.wait_screen("main:1", "session-tick")
    first_pane = int(tmux.pane("main:1", "#{pane_tty}").rsplit("/", 1)[1])  # (the job has no controlling
    bystander.hold(first_pane)  # terminal after a session move: Linux gives it back only to the leader)
    before = bystander.state()
    result = adopt(tmux, job)  # again, from its pane: our holder there retires, the namesake does not
    assert result.returncode == 0, result.stderr
    wait_for(lambda: len(tmux.windows()) == 2, what="the first adoption's window to close")
    window = f"main:{tmux.windows()[-1]}"
    tmux.wait_screen(window, "session-tick")
    tmux("send-keys", "-t", window, "C-c")
    tmux("send-keys", "-t", window, "echo moved-twice", "Enter")
    tmux.wait_screen(window, "moved-twice\n")
    assert bystander.state() == before
    assert bystander.answers(old) and bystander.answers(first_pane)


def test_steal_never_takes_a_colliding_master(sshd, tmux, bystander):
    sshd.type(0, "bash -c 'while :; do echo steal-tick; sleep 0.2; done'")
    sshd.wait_log(0, "steal-tick")
    job = sshd.job(0)
    index = pts_index_of(job)
    bystander.hold(index)
    before = bystander.state()
    result = adopt(tmux, job, "--mode", "steal")
    assert result.returncode == 0, result.stderr
    tmux.wait_screen("main:1", "steal-tick")
    tmux("send-keys", "-t", "main:1", "C-c")
    tmux("send-keys", "-t", "main:1", "echo stolen-here", "Enter")
    tmux.wait_screen("main:1", "stolen-here\n")
    assert bystander.state() == before
    assert bystander.answers(index)


def test_check_touches_no_process(sshd, tmux, bystander, spawn, monkeypatch):
    """--check, in steal and attach cases and on a kernel without tty-index: nobody wakes up."""
    sshd.type(0, "sleep 300")
    job = sshd.job(0)
    alone = spawn.on_pty(ECHO)
    bystander.hold(pts_index_of(job))
    bystander.hold(pts_index_of(alone.pid))
    watched = [sshd.process.pid, *sshd.shells, job, alone.pid]
    look = lambda: {pid: _untouched_facts(pid) for pid in watched}  # noqa: E731
    before, others_before = bystander.state(), wait_for(lambda: _stable(look), what="stillness")
    no_tty_index = {"REPTYR_TMUX_NO_TTY_INDEX": "1"}
    for pid, mode, env in ((job, "auto", {}), (job, "steal", {}), (alone.pid, "auto", {}),
                           (alone.pid, "attach", {}), (job, "steal", no_tty_index)):
        checked = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "--check", "--mode", mode, str(pid)],
                                 capture_output=True, text=True, env=dict(os.environ, **env))
        if env:
            assert checked.returncode == 2 and "no tty-index" in checked.stderr, checked.stderr
        else:
            assert checked.returncode == 0 and "can be adopted" in checked.stdout, checked.stderr
    assert bystander.state() == before
    assert look() == others_before


def test_free_check_does_not_count_a_namesake(spawn, bystander):
    term, slave = spawn.new_terminal()
    path = os.ttyname(slave)
    os.close(slave)
    bystander.hold(int(path.rsplit("/", 1)[1]))  # its pts/N is the controlling tty of its child
    survey.check_tty_free(path)  # ours is free: no refusal
    taken = spawn.on_pty(ECHO)  # the very terminal of a session here still counts
    with pytest.raises(Refusal, match="already the controlling terminal"):
        survey.check_tty_free(f"/dev/pts/{pts_index_of(taken.pid)}")


def test_picker_tells_a_namesake_from_our_own_pane(tmux, bystander):
    """Processes on this tmux's panes are left out of the menu; one on a container's pts with the same
    number as a pane is not on our pane, and is listed."""
    pane_tty = tmux.pane("main:0", "#{pane_tty}")
    shell = int(tmux.pane("main:0", "#{pane_pid}"))
    child = bystander.hold(int(pane_tty.rsplit("/", 1)[1]))
    listed = subprocess.run([*CLI, "pick", "-L", tmux.socket, "--list"], capture_output=True, text=True,
                            check=True).stdout
    pids = {int(line.split()[0]) for line in listed.splitlines()}
    assert child in pids and shell not in pids


def test_fds_on_namesake_terminals_are_refused(spawn, bystander):
    """A process with fds on its host pts/N and on a container's pts/N: which is its terminal?"""
    opener = ("import os, sys; print('path?', flush=True); path = sys.stdin.readline().strip(); "
              "fd = os.open(path, os.O_RDWR | os.O_NOCTTY); os.set_inheritable(fd, True); "
              f"os.execv({sys.executable!r}, {ECHO!r})")
    victim = spawn.on_pty([sys.executable, "-c", opener], ready="path?")
    child = bystander.hold(pts_index_of(victim.pid))
    victim.term.write(f"/proc/{child}/fd/0\n".encode())  # their pts/N, by its magic link
    victim.term.expect("ready")
    namesakes = {proc.tty_of_fd(victim.pid, fd) for fd in proc.open_fds(victim.pid)}
    assert proc.tty_of_fd(child, 0) in namesakes and proc.tty_of_fd(victim.pid, 0) in namesakes
    refused_untouched(spawn, victim, Refusal, "different terminals that are all called")
    victim.term.write(b"mine\n")
    victim.term.expect("got: mine")


# -- a target that sees another /dev/pts --------------------------------------------------------------

def contained(spawn: Spawner, how: list[str]):
    return spawn.on_pty(["unshare", "-m", "--propagation", "private", sys.executable,
                         str(VICTIMS / "contained.py"), *how])


@pytest.mark.parametrize("seen_at", ["before touching", "after opening"])
@pytest.mark.parametrize("where", ["own devpts with pts/N", "own devpts without pts/N", "chroot"])
def test_target_that_sees_another_dev_pts_is_refused(spawn, tmp_path, monkeypatch, where, seen_at):
    term, slave = spawn.new_terminal()
    path = os.ttyname(slave)
    index = int(path.rsplit("/", 1)[1])
    if where == "chroot":
        (tmp_path / "root").mkdir()
        victim = contained(spawn, ["--chroot", str(tmp_path / "root")])
    else:
        victim = contained(spawn, ["--own-devpts", str(index + 1 if "with pts" in where else 0)])
        there = f"/proc/{victim.pid}/root{path}"
        assert os.path.exists(there) == ("with pts" in where)
    if seen_at == "after opening":  # test-only: skip the look from /proc, so the opened fd is judged
        monkeypatch.setattr(attach_module, "_refuse_other_view", lambda pid, tty: None)
    before = snapshot(victim.pid)
    still = wait_for(lambda: _stable(lambda: _untouched_facts(victim.pid)), what="the victim to sit still")
    try:
        # (where its own pts numbers collide with its host terminal's, the namesake check speaks first)
        namesakes = f"process {victim.pid} .*different terminals that are all called"
        with pytest.raises(Refusal, match=f"{re.escape(f'process {victim.pid} {OTHER_VIEW}')}|{namesakes}"):
            attach(victim.pid, path)
    finally:
        os.close(slave)
    assert snapshot(victim.pid) == before
    if seen_at == "before touching":
        assert _untouched_facts(victim.pid) == still  # not even woken
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")


# -- a target in another pid namespace ----------------------------------------------------------------

class PidNamespaceJob:
    """ticker.py as a job of an interactive bash that is pid 1 of its own pid namespace."""

    def __init__(self, spawn: Spawner, log: str):
        self.log = log
        pid, master = pty.fork()
        if pid == 0:
            env = dict(os.environ, PS1="$ ", TERM="dumb", HISTFILE="/dev/null")
            os.execvpe("unshare", ["unshare", "-p", "-f", "--kill-child", "--mount-proc", "bash", "--norc",
                                   "--noprofile", "-i"], env)
        from conftest import Terminal, Victim

        self.term = Terminal(master, "?")
        self.term.expect("$ ")
        self.term.write(f"{sys.executable} {VICTIMS / 'ticker.py'} {log}\n".encode())
        self.term.expect("ready")
        self.pid = wait_for(lambda: next(iter(self.copies()), None), what="the ticker")
        spawn._track(Victim(self.pid, self.term, children=[pid]))

    def copies(self) -> list[int]:
        """Every live process running this ticker (a stray clone of it included)."""
        return [s.pid for s in proc.all_stats() if s.state not in "ZX" and self.log in proc.cmdline(s.pid)]

    def writers(self, seconds: float = 0.3) -> set[str]:
        """The pids (as numbered inside) that append to the log meanwhile."""
        with open(self.log) as f:
            f.seek(0, 2)
            time.sleep(seconds)
            return {line.split()[0] for line in f.read().splitlines()}


def traced_by_us() -> list[int]:
    me = str(os.getpid())
    found = []
    for pid in proc.all_pids():
        with contextlib.suppress(OSError):
            if proc.read_status(pid).get("TracerPid") == me:
                found.append(pid)
    return found


def exactly_one_copy(job: PidNamespaceJob) -> None:
    assert job.copies() == [job.pid]
    assert traced_by_us() == []
    assert len(job.writers()) == 1


def test_target_in_another_pid_namespace_is_refused(spawn, tmp_path, tmux):
    job = PidNamespaceJob(spawn, str(tmp_path / "ticks"))
    before = snapshot(job.pid)
    term, slave = spawn.new_terminal()
    try:
        with pytest.raises(Refusal, match=f"process {job.pid} .* runs in another pid namespace"):
            attach(job.pid, os.ttyname(slave))
    finally:
        os.close(slave)
    result = adopt(tmux, job.pid, "--mode", "attach")
    assert result.returncode == 2 and "run reptyr-tmux inside it" in result.stderr, result.stderr
    assert snapshot(job.pid) == before
    exactly_one_copy(job)


@pytest.mark.parametrize("step", [*JOB_STEPS, None])
def test_dummy_child_in_another_pid_namespace_never_outlives_the_move(spawn, tmp_path, monkeypatch, step):
    """With the refusal bypassed (test-only), the dummy child made by real ptrace in the target's pid
    namespace is found by its pid here (ptrace's clone event) and ended, after a fault at each step
    and after a full move."""
    monkeypatch.setattr(survey, "_refuse_other_pid_namespace", lambda stat: None)
    job = PidNamespaceJob(spawn, str(tmp_path / "ticks"))
    term, slave = spawn.new_terminal()
    if step:
        monkeypatch.setenv("REPTYR_TMUX_FAULT", step)
    try:
        if step:
            with pytest.raises(InjectedFault):
                attach(job.pid, os.ttyname(slave))
        else:
            assert "fork-dummy" in attach(job.pid, os.ttyname(slave)).steps
            assert proc.read_stat(job.pid).tty_dev == os.fstat(slave).st_rdev
    finally:
        os.close(slave)
    exactly_one_copy(job)
    if not step:
        term.write(b"in its new home\n")
        term.expect("got: in its new home")
