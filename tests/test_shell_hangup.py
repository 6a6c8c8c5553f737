"""`reptyr-tmux attach` (the reptyr drop-in): the moved job outlives its old shell hanging up, and gets
its own SIGHUP action back afterwards, for each shell.

The job (echo.py --outlive-terminal) stays when its input ends or fails, so only a SIGHUP ends it once
its terminal has gone: "closing the new terminal hangs it up" cannot pass by the job merely seeing EOF.
With --catch-hup it has a SIGHUP handler of its own, as vim has: that handler, not just any action, must
come back, and must not have run for its old shell's hangup.
"""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from conftest import CLI, ECHO, Terminal, gone, wait_for

from reptyr_tmux import proc

SHELLS = {  # argv and environment giving the prompt "$ " and no rc files
    "bash": (["bash", "--norc", "--noprofile", "-i"], {"PS1": "$ "}),
    "bash-huponexit": (["bash", "--norc", "--noprofile", "-l", "-i", "-O", "huponexit"], {"PS1": "$ "}),
    "zsh": (["zsh", "-f", "-i"], {"PS1": "$ "}),  # its HUP option (on by default) hangs jobs up
    "fish": (["fish", "--no-config", "--private", "-i", "-C", "function fish_prompt; printf '$ '; end"], {}),
    "dash": (["dash", "-i"], {"PS1": "$ "}),
}


def on_pty(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, Terminal]:
    pid, master = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, {**os.environ, "TERM": "dumb", "HISTFILE": "/dev/null", **(env or {})})
    return pid, Terminal(master, "?")


def sighup_action(pid: int) -> tuple[bool, bool]:
    status = proc.read_status(pid)
    return (proc.has_signal(proc.signal_mask(status, "SigIgn"), signal.SIGHUP),
            proc.has_signal(proc.signal_mask(status, "SigCgt"), signal.SIGHUP))


JOB = [*ECHO, "--outlive-terminal"]


@dataclass
class ShellsJob:
    shell: int
    old: Terminal  # the shell's terminal
    job: int
    children: list[int] = field(default_factory=list)  # ours, besides the shell: killed and reaped after


@contextlib.contextmanager
def a_job_of(spawn, name: str, extra: tuple[str, ...] = ()) -> Iterator[ShellsJob]:
    """`name`'s shell on a fresh pty running JOB (with `extra` options) in the foreground; afterwards
    the job, the shell and the children added are killed."""
    argv, env = SHELLS[name]
    shell, old = on_pty(argv, env)
    spawn.terminals.append(old)
    found = ShellsJob(shell, old, 0)
    try:
        old.expect("$ ")
        old.write((" ".join([*JOB, *extra]) + "\n").encode())
        old.expect("ready")
        found.job = wait_for(lambda: next((s.pid for s in proc.all_stats()
                                           if s.ppid == shell and s.state != "Z"), None), what="the job")
        yield found
    finally:
        for pid in (found.job, *found.children, shell):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in (*found.children, shell):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def attach_in_a_new_terminal(spawn, where: ShellsJob) -> tuple[int, Terminal]:
    relay, new = on_pty([*CLI, "attach", str(where.job)])
    spawn.terminals.append(new)
    where.children.append(relay)
    return relay, new


@pytest.fixture
def moved_job(spawn, request):
    """A job of a shell on an old terminal, moved by `attach` run in a new one. `request.param`: the
    shell's name, or (name, extra options of the job)."""
    name, extra = request.param if isinstance(request.param, tuple) else (request.param, ())
    with a_job_of(spawn, name, extra) as there:
        own = sighup_action(there.job)
        relay, new = attach_in_a_new_terminal(spawn, there)
        new.expect("winch")  # the job speaks through the new terminal
        there.old.expect("$ ")  # and its old shell has its prompt back
        yield {"shell": there.shell, "old": there.old, "job": there.job, "own": own, "relay": relay,
               "new": new}


ALL = pytest.mark.parametrize("moved_job", list(SHELLS), indirect=True)


@ALL
def test_the_job_outlives_its_old_terminal_closing_and_gets_its_sighup_back(moved_job):
    job, new = moved_job["job"], moved_job["new"]
    assert sighup_action(job) == (True, False)  # kept from its shell's hangup meanwhile
    moved_job["old"].close()  # the old terminal goes away (not the shell killed): its shell hangs up
    wait_for(lambda: gone(moved_job["shell"]), what="the old shell to exit")
    wait_for(lambda: sighup_action(job) == moved_job["own"], what="its own SIGHUP action back")
    new.write(b"still here\n")
    new.expect("got: still here")
    new.close()  # closing the new terminal now hangs it up, as usual
    wait_for(lambda: gone(job), what="the job to be hung up")


@ALL
def test_closing_the_new_terminal_first_hangs_the_job_up_as_usual(moved_job):
    job = moved_job["job"]
    moved_job["new"].close()
    wait_for(lambda: gone(job), what="the job to be hung up")
    assert not gone(moved_job["shell"])


def exit_the_shell(moved_job) -> None:
    """`exit` typed at the old shell, again while it only warns about its jobs (zsh, fish)."""
    for _ in range(3):
        moved_job["old"].write(b"exit\n")
        try:
            wait_for(lambda: gone(moved_job["shell"]), timeout=1.0, what="the old shell to exit")
            return
        except AssertionError:
            continue
    raise AssertionError(f"the old shell did not exit: {moved_job['old'].quiet_for(0.2)!r}")


@ALL
def test_the_job_outlives_its_old_shell_exiting(moved_job):
    job, new = moved_job["job"], moved_job["new"]
    exit_the_shell(moved_job)
    wait_for(lambda: sighup_action(job) == moved_job["own"], what="its own SIGHUP action back")
    new.write(b"after exit\n")
    new.expect("got: after exit")
    new.close()
    wait_for(lambda: gone(job), what="the job to be hung up")


WITH_A_HANDLER = pytest.mark.parametrize("moved_job", [(name, ("--catch-hup",)) for name in SHELLS],
                                         indirect=True, ids=list(SHELLS))


@WITH_A_HANDLER
def test_a_sighup_handler_of_its_own_comes_back_untouched_by_the_old_shells_hangup(moved_job):
    """vim's case: a program that handles SIGHUP (vim ends with "Caught deadly signal HUP"). Its handler
    does not run for the old shell's hangup; afterwards that very handler is back and runs for a
    SIGHUP; closing the new terminal then hangs it up through it."""
    job, new = moved_job["job"], moved_job["new"]
    assert moved_job["own"] == (False, True)
    moved_job["old"].close()
    wait_for(lambda: gone(moved_job["shell"]), what="the old shell to exit")
    wait_for(lambda: sighup_action(job) == moved_job["own"], what="its own SIGHUP handler back")
    new.write(b"after the hangup\n")
    assert "sighup" not in new.expect("got: after the hangup")  # the old shell's SIGHUP never reached it
    os.kill(job, signal.SIGHUP)
    new.expect("sighup")
    new.write(b"handled\n")
    new.expect("got: handled")
    new.close()
    wait_for(lambda: gone(job), what="the job to be hung up")


@pytest.mark.parametrize("name", list(SHELLS))
def test_an_old_shell_slow_to_see_the_stop_still_gets_its_prompt_back(spawn, name):
    """A busy machine: the shell runs only after its job has stopped for the move (here it is itself
    held stopped until 0.3 s after that stop). The kernel tells a stop to a wait only while the job is
    still stopped, so the move waits until the shell has taken its terminal back before it lets the job
    run: otherwise the shell, told "continued" only, would go on waiting for its foreground job for good."""
    with a_job_of(spawn, name) as there:
        os.kill(there.shell, signal.SIGSTOP)
        wait_for(lambda: proc.read_stat(there.shell).state == "T", what="the shell to be held")
        relay, new = attach_in_a_new_terminal(spawn, there)
        wait_for(lambda: proc.read_stat(there.job).state in "tT", what="the job to stop for the move")
        time.sleep(0.3)  # the shell's delay (the move itself takes ~20 ms)
        os.kill(there.shell, signal.SIGCONT)
        new.expect("winch")
        there.old.expect("$ ")  # its prompt is back
        there.old.write(b'echo shell""-answers\n')
        there.old.expect("shell-answers\r\n")
        new.write(b"moved\n")
        new.expect("got: moved")


def test_a_forced_attach_mode_in_tmux_gives_sighup_back_at_once(spawn, tmux):
    """In tmux, `adopt --mode attach` has no relay that could wait for the old shell (the pane's holder
    is tiny and native): the job has its own SIGHUP action right after the move, as the README says,
    so its old shell hanging up hangs it up too (type disown there first; auto mode moves the shell)."""
    with a_job_of(spawn, "bash") as there:
        own = sighup_action(there.job)
        adopt = [*CLI, "adopt", "-L", tmux.socket, "-t", "main", "--mode", "attach", str(there.job)]
        result = subprocess.run(adopt, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert sighup_action(there.job) == own
        tmux("send-keys", "-t", "main:1", "in the pane", "Enter")
        tmux.wait_screen("main:1", "got: in the pane")
        there.old.close()
        wait_for(lambda: gone(there.job), what="the old shell to hang the job up")


def process_at(pid: int, argv: list[str], tries: int = 500) -> subprocess.Popen:
    """A child of ours running argv (SIGHUP ignored) with exactly this pid, freed a moment ago: the kernel
    hands out the number after ns_last_pid (other processes of the machine may take it first: try again)."""
    for _ in range(tries):
        with open("/proc/sys/kernel/ns_last_pid", "w") as f:
            f.write(str(pid - 1))
        child = subprocess.Popen(argv, preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        if child.pid == pid:
            return child
        child.kill()
        child.wait()
    pytest.skip(f"pid {pid} was taken by someone else {tries} times")


def test_a_stranger_with_the_jobs_pid_is_not_touched_when_the_old_shell_exits(spawn):
    """The job ended while its old shell lived (its child, in a session of its own, keeps the new
    terminal, so the relay stays); its pid is free, and another process gets it. When the old shell then
    goes, its SIGHUP action goes to nobody: the stranger's SIGHUP stays ignored, nobody traces it."""
    with a_job_of(spawn, "bash") as there:
        there.old.write(b"\x03")  # (the echo job is not used: a sh job that leaves a child behind)
        wait_for(lambda: gone(there.job), what="the first job to end")
        there.old.expect("$ ")
        # its child leaves the job's session (as a daemon does), so nothing keeps the job's number in use
        there.old.write(b"sh -c 'read -r line; setsid sleep 300 & echo \"left $!\"'\n")
        there.job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == there.shell
                                           and s.comm == "sh" and s.state != "Z"), None), what="the sh job")
        relay, new = attach_in_a_new_terminal(spawn, there)
        there.old.expect("$ ")
        wait_for(lambda: sighup_action(there.job) == (True, False), what="the move")
        new.write(b"go\n")
        new.expect("left ")
        there.children.append(int(new.expect("\r\n")))  # (its child is not ours; killed afterwards too)
        wait_for(lambda: gone(there.job), what="the job to end, its child left")
        freed, there.job = there.job, 0  # from here the number is not the job's
        wait_for(lambda: not os.path.exists(f"/proc/{freed}"), what="its shell to reap it")
        stranger = process_at(freed, ["sleep", "300"])
        try:
            before = proc.read_status(stranger.pid)["SigIgn"]
            there.old.close()  # the old shell hangs up and exits: the relay gives the action back
            wait_for(lambda: gone(there.shell), what="the old shell to exit")
            time.sleep(0.3)  # what the relay does now, it does at once
            status = proc.read_status(stranger.pid)
            assert (status["SigIgn"], status["TracerPid"]) == (before, "0")
            assert proc.has_signal(proc.signal_mask(status, "SigIgn"), signal.SIGHUP)
        finally:
            stranger.kill()
            stranger.wait()


class SecondHangup(Exception):
    pass


def test_a_second_hangup_during_the_give_back_does_not_cut_it_short(spawn, monkeypatch):
    """The relay gives the job its SIGHUP action back as it stops, by ptrace; a second SIGHUP to the
    relay that lands in the middle (the job held, half done) waits until it is done, and only then
    reaches the relay's handler."""
    from reptyr_tmux.engine import remote
    from reptyr_tmux.engine.shell_hangup import ShellHangupGuard

    job = spawn.on_pty(ECHO)
    own = remote.set_disposition(job.pid, signal.SIGHUP, None)  # ignored, as the move leaves it
    assert sighup_action(job.pid) == (True, False)
    guard = ShellHangupGuard(job.pid, own, os.getpid())  # (an old shell that lives on: us)
    lend_a_page = remote.RemoteProcess.scratch

    def hangup_meanwhile(target):
        os.kill(os.getpid(), signal.SIGHUP)  # the job is held now
        return lend_a_page(target)

    monkeypatch.setattr(remote.RemoteProcess, "scratch", hangup_meanwhile)

    def relays_handler(*_):
        raise SecondHangup

    previous = signal.signal(signal.SIGHUP, relays_handler)
    try:
        with pytest.raises(SecondHangup):
            guard.give_back()
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert sighup_action(job.pid) == (False, False)  # its own action (the default) is back
    assert proc.read_status(job.pid)["TracerPid"] == "0"
