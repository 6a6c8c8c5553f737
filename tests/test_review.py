"""Hard cases found in review: forks in flight, busy shells, slow handlers, seccomp, crafted names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLI, ECHO, VICTIMS, wait_for
from test_faults import snapshot

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.errors import Refusal


def move(spawn, victim):
    term, slave = spawn.new_terminal()
    try:
        attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(slave)
    return term


@pytest.mark.parametrize("how", ["--fork", "--spawn"])
def test_target_that_forks_all_the_time(spawn, how):
    """Seized mid-fork or mid-vfork: the fork completes, the child is not held, nothing fails."""
    victim = spawn.on_pty([sys.executable, str(VICTIMS / "forker.py"), how])
    moved = 0
    for _ in range(300):
        try:
            term = move(spawn, victim)
        except Refusal as e:  # a child happened to exist at that instant (vforked: not yet run): untouched
            assert "shares its process group" in str(e) or "uninterruptible" in str(e)
            continue
        moved += 1
        term.write(f"round {moved}\n".encode())
        seen = term.expect(f"got: round {moved}")
        assert "FORK FAILED" not in seen
        stuck = [s.pid for s in proc.all_stats() if s.ppid == victim.pid and s.state in "tT"]
        assert stuck == []
        if moved == 5:
            return
    pytest.fail(f"only {moved} of 300 attempts found the forker without a child")


def test_shell_leading_a_foreground_job_is_refused_and_the_job_lives(spawn):
    job = spawn.in_shell(" ".join(ECHO))
    term, slave = spawn.new_terminal()
    with pytest.raises(Refusal, match="another job"):
        attach(job.shell_pid, os.ttyname(slave))
    os.close(slave)
    job.term.write(b"still fine\n")
    job.term.expect("got: still fine")


def test_slow_sigtstp_handler_is_continued_after_the_redraw(spawn, tmux):
    victim = spawn.on_pty([*ECHO, "--slow-tstp"])
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    time.sleep(1.0)
    assert victim.stat().state != "T"
    tmux("send-keys", "-t", "main:1", "after redraw", "Enter")
    tmux.wait_screen("main:1", "got: after redraw")


def test_seccomp_target_is_refused_untouched(spawn):
    victim = spawn.on_pty([*ECHO, "--seccomp"])
    assert proc.read_status(victim.pid)["Seccomp"] == "2"
    before = snapshot(victim.pid)
    result = subprocess.run([*CLI, "attach", str(victim.pid)], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "seccomp" in result.stderr
    assert snapshot(victim.pid) == before


def test_strict_seccomp_target_is_refused_and_keeps_working(spawn, tmux, strict_echo):
    """Strict mode kills a process for any syscall but read, write and exit: one injected ioctl
    would be its end."""
    victim = spawn.on_pty([strict_echo])
    assert proc.read_status(victim.pid)["Seccomp"] == "1"
    before = snapshot(victim.pid)
    for mode in ("auto", "attach", "session"):
        result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", "--mode", mode,
                                 str(victim.pid)], capture_output=True, text=True)
        assert result.returncode == 2 and "seccomp" in result.stderr, (mode, result.stderr)
    assert snapshot(victim.pid) == before
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")
    assert len(tmux("list-windows", "-t", "main").splitlines()) == 1


EXEC_ON_USR1 = """
import os, signal, sys
signal.signal(signal.SIGUSR1, lambda *_: os.execv(sys.argv[1], sys.argv[1:2]))
print("ready", flush=True)
while True:
    signal.pause()
"""


def test_seccomp_begun_by_an_exec_after_the_survey_is_seen_once_held(spawn, strict_echo, monkeypatch):
    """The survey saw no seccomp; the program then exec'd one under strict mode (same pid, session and
    terminal). Once held, before anything is injected, the engine looks again and refuses."""
    import reptyr_tmux.engine.attach as attach_module

    victim = spawn.on_pty([sys.executable, "-c", EXEC_ON_USR1, strict_echo])
    surveyed = attach_module.survey(victim.pid)
    os.kill(victim.pid, signal.SIGUSR1)
    victim.term.expect("ready")  # strict_echo's, after the exec
    assert proc.read_status(victim.pid)["Seccomp"] == "1"
    monkeypatch.setattr(attach_module, "survey", lambda *_args, **_kw: surveyed)
    master, slave = os.openpty()
    try:
        with pytest.raises(Refusal, match="seccomp"):
            attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")


def test_crafted_name_reaches_no_terminal_through_messages(spawn, tmux):
    evil = "\x1b]0;PWN\x07\x1b[2J"
    victim = spawn.detached([*ECHO, "--name", evil])
    wait_for(lambda: proc.read_stat(victim.pid).comm.startswith("\x1b"), what="the crafted name")
    refused = subprocess.run([*CLI, "attach", str(victim.pid)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "\x1b" not in refused.stderr and "\x07" not in refused.stderr
    checked = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "--check", "-s", str(victim.pid)],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and "\x1b" not in checked.stdout + checked.stderr
    adopted = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", "-s", str(victim.pid)],
                             capture_output=True, text=True)
    assert adopted.returncode == 0 and "\x1b" not in adopted.stdout + adopted.stderr
    os.kill(victim.pid, signal.SIGTERM)


def test_our_own_pane_process_and_the_tmux_server_are_refused(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    assert subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)],
                          capture_output=True).returncode == 0
    holder = int(tmux.pane("main:1", "#{pane_pid}"))
    wait_for(lambda: proc.read_stat(holder).comm.startswith(("reptyr", "memfd")), what="the holder")
    for pid, words in ((holder, "own pane process"), (int(tmux("display", "-p", "#{pid}")), "tmux server")):
        result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-s", str(pid)], capture_output=True,
                                text=True)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    assert tmux.windows() == ["0", "1"]


def test_signals_raining_on_the_target_while_it_moves(spawn):
    """Signals that arrive while we hold it wait (blocked by ptrace) and are handled afterwards."""
    victim = spawn.on_pty([*ECHO, "--count-usr1"])
    storm = subprocess.Popen([sys.executable, "-c", f"""
import os, signal, time
while True:
    os.kill({victim.pid}, signal.SIGUSR1)
    time.sleep(0.0005)
"""])
    try:
        for n in range(5):
            term = move(spawn, victim)
            term.write(f"storm {n}\n".encode())
            term.expect(f"got: storm {n} usr1=")
    finally:
        storm.kill()
        storm.wait()
    assert victim.alive()


def test_odd_command_lines_are_listed_safely_and_adopted(spawn, tmux):
    huge = "x" * 100_000
    victim = spawn.on_pty([*ECHO, b"two\nlines \xff\xfe \x1b[2J", huge])
    listing = subprocess.run([*CLI, "pick", "-L", tmux.socket, "--list"], capture_output=True, text=True,
                             errors="replace")
    assert listing.returncode == 0
    mine = [line for line in listing.stdout.splitlines() if line.split()[:1] == [str(victim.pid)]]
    assert len(mine) == 1 and len(mine[0]) < 300 and "lines" in mine[0]
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_killing_the_pane_process_hangs_the_program_up(spawn, tmux):
    """The holder is the pane: kill -9 it and tmux closes the pane, as kill-pane would."""
    victim = spawn.on_pty(ECHO)
    assert subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)]).returncode == 0
    os.kill(int(tmux.pane("main:1", "#{pane_pid}")), signal.SIGKILL)
    _, status = os.waitpid(victim.pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP
    wait_for(lambda: tmux.windows() == ["0"], what="the pane to close")


@pytest.mark.parametrize("step", ["infect", "open-tty", "set-ctty", "dup-over-1"])
def test_target_dying_while_held_is_reported_cleanly(spawn, step):
    victim = spawn.on_pty(ECHO)
    here, slave = spawn.new_terminal()  # attach relays to its stdin: it must be a terminal
    try:
        fault = f"{step}:kill={victim.pid}"
        result = subprocess.run([*CLI, "attach", str(victim.pid)], capture_output=True, text=True,
                                stdin=slave, env=dict(os.environ, REPTYR_TMUX_FAULT=fault))
    finally:
        os.close(slave)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "exited while we were working on it" in lines[0]


# After infect the target's open fails; after open-tty, its TIOCSCTTY on the hung-up pty; after the last
# dup only the final check can tell. The fault hook waits until the server is really gone.
@pytest.mark.parametrize("step", ["infect", "open-tty", "dup-over-2"])
def test_tmux_server_dying_mid_adoption_spares_the_target(spawn, tmux, step):
    victim = spawn.on_pty(ECHO)
    before = snapshot(victim.pid)
    server = int(tmux("display-message", "-p", "#{pid}"))
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)],
                            capture_output=True, text=True,
                            env=dict(os.environ, REPTYR_TMUX_FAULT=f"{step}:kill={server}"))
    assert result.returncode != 0
    assert snapshot(victim.pid) == before
    victim.term.write(b"tmux died, I did not\n")
    victim.term.expect("got: tmux died, I did not")
