"""`reptyr-tmux attach` (the reptyr drop-in): the moved job outlives its old shell hanging up, and gets
its own SIGHUP action back afterwards, for each shell."""

from __future__ import annotations

import os
import pty
import signal

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


@pytest.fixture
def moved_job(spawn, request):
    """A job of `request.param`'s shell on an old terminal, moved by `attach` run in a new one."""
    argv, env = SHELLS[request.param]
    shell, old = on_pty(argv, env)
    spawn.terminals.append(old)
    old.expect("$ ")
    old.write((" ".join(ECHO) + "\n").encode())
    old.expect("ready")
    job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell and s.state != "Z"),
                                None), what="the job")
    own = sighup_action(job)
    relay, new = on_pty([*CLI, "attach", str(job)])
    spawn.terminals.append(new)
    new.expect("winch")  # the job speaks through the new terminal
    old.expect("$ ")  # and its old shell has its prompt back
    yield {"shell": shell, "old": old, "job": job, "own": own, "relay": relay, "new": new}
    for pid in (job, relay, shell):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in (relay, shell):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


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


@pytest.mark.parametrize("moved_job", ["bash-huponexit", "zsh"], indirect=True)
def test_the_job_outlives_its_old_shell_exiting(moved_job):
    old, job = moved_job["old"], moved_job["job"]
    old.write(b"exit\n")
    if b"logout" not in old.quiet_for(0.5):  # zsh first warns that it has jobs; the second is obeyed
        old.write(b"exit\n")
    wait_for(lambda: gone(moved_job["shell"]), what="the old shell to exit")
    wait_for(lambda: sighup_action(job) == moved_job["own"], what="its own SIGHUP action back")
    moved_job["new"].write(b"after exit\n")
    moved_job["new"].expect("got: after exit")
