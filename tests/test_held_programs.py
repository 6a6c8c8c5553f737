"""What real programs do around a move (issue 12): company in their session, fds that change, fd flags,
a tool that is stopped or slow, two tools at once."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import VICTIMS, wait_for
from test_faults import snapshot

from reptyr_tmux import proc
from reptyr_tmux.attach import attach
from reptyr_tmux.errors import Refusal


def new_tty(spawn) -> tuple:
    term, slave = spawn.new_terminal()
    term.slave_path = os.ttyname(slave)
    return term, slave


def test_a_shell_with_a_background_job_is_refused_and_nobody_loses_the_terminal(spawn, shell):
    shell.run("sleep 1000 &")
    job = wait_for(lambda: next((s for s in proc.all_stats() if s.sid == shell.pid and s.comm == "sleep"),
                                None), what="the background job")
    shell_before, job_before = snapshot(shell.pid), snapshot(job.pid)
    term, slave = new_tty(spawn)
    try:
        with pytest.raises(Refusal, match="take the terminal from its other processes.*adopt"):
            attach(shell.pid, term.slave_path)
    finally:
        os.close(slave)
    assert snapshot(shell.pid) == shell_before and snapshot(job.pid) == job_before
    assert proc.read_stat(job.pid).tty_nr == proc.read_stat(shell.pid).tty_nr != 0
    shell.run("jobs", "sleep 1000")  # still its job, on its terminal


FLIPPER = [sys.executable, str(VICTIMS / "fd_flipper.py")]
MOVES = 20


def test_an_fd_that_changes_between_survey_and_hold_is_decided_from_what_is_held(spawn, tmp_path):
    """fd 3 flips between /dev/tty and a log file every ms: the fds are read again once it is held, so
    the new terminal never lands over the log fd (a log line would show on the terminal)."""
    victim = spawn.on_pty([*FLIPPER, str(tmp_path / "log")])
    for _ in range(MOVES):
        term, slave = new_tty(spawn)
        try:
            attach(victim.pid, term.slave_path)
        finally:
            os.close(slave)
        assert b"LOG" not in term.quiet_for(0.02)
    assert victim.alive()


FD_FLAGS = [sys.executable, str(VICTIMS / "fd_flags.py")]


def flags_of(pid: int, fd: int) -> int:
    return proc.fd_flags(pid, fd) & (os.O_ACCMODE | os.O_NONBLOCK | os.O_APPEND | os.O_ASYNC)


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/dev/console", os.W_OK), reason="needs root")
def test_each_fd_keeps_its_access_mode_flags_and_owner(spawn):
    victim = spawn.on_pty([*FD_FLAGS, "--console"])
    before = {fd: flags_of(victim.pid, fd) for fd in (0, 3, 4)}
    console = proc.fd_target(victim.pid, 4)
    term, slave = new_tty(spawn)
    try:
        attach(victim.pid, term.slave_path)
    finally:
        os.close(slave)
    assert {fd: flags_of(victim.pid, fd) for fd in (0, 3, 4)} == before
    assert proc.fd_target(victim.pid, 3) == term.slave_path  # moved, still non-blocking
    assert proc.fd_target(victim.pid, 4) == console  # the console is not its terminal: left alone
    term.write(b"typed\n")
    term.expect("sigio got: typed")  # SIGIO still comes to it, for input on the new terminal


def test_a_session_members_write_only_fd_stays_write_only(spawn, shell):
    from test_session import move

    shell.run(f"exec 7>/dev/tty 8</dev/tty; {sys.executable} -c 'import time; time.sleep(1000)' &")
    before = {fd: flags_of(shell.pid, fd) for fd in (7, 8)}
    term, _ = move(spawn, shell, shell.pid)
    assert {fd: flags_of(shell.pid, fd) for fd in (7, 8)} == before == {7: os.O_WRONLY, 8: os.O_RDONLY}
    term.write(b"echo hi >&7\n")
    term.expect("hi")
