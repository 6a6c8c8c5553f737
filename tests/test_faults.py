"""A forced failure after each engine step leaves the target as it was, working on its old terminal."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import ECHO, Spawner, Victim, wait_for

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.errors import InjectedFault

LEADER_STEPS = ["watch-new-tty", "copy-termios", "infect", "hold-threads", "look-again",
                "map-scratch", "ignore-sighup", "open-tty", "save-fd-0", "save-fd-1", "save-fd-2",
                "release-old-ctty", "set-ctty", "dup-over-0", "dup-over-1", "dup-over-2", "check-new-tty"]
JOB_STEPS = ["watch-new-tty", "copy-termios", "stop-job", "infect", "hold-threads", "look-again",
             "map-scratch", "ignore-sighup", "open-tty", "save-fd-0", "save-fd-1", "save-fd-2", "fork-dummy",
             "dummy-own-group", "join-dummy-group", "setsid", "set-ctty", "dup-over-0", "dup-over-1",
             "dup-over-2", "check-new-tty"]
ONE_WAY = JOB_STEPS[JOB_STEPS.index("setsid"):]  # Linux has no way back into a session


def snapshot(pid: int) -> dict:
    stat = proc.read_stat(pid)
    status = proc.read_status(pid)
    return {
        "session": (stat.sid, stat.pgid, stat.tty_nr),
        "fds": {fd: (proc.fd_target(pid, fd), proc.fd_flags(pid, fd)) for fd in proc.open_fds(pid)},
        "signals": {key: status[key] for key in ("SigIgn", "SigCgt", "SigBlk")},
        "maps": [(start, end, perms) for start, end, perms, _ in proc.maps(pid)],
        "threads": status["Threads"],
        "children": sorted(s.pid for s in proc.all_stats() if s.ppid == pid),
    }


def refused_untouched(spawn: Spawner, victim: Victim, error: type[Exception], match: str) -> None:
    """attach onto a fresh terminal fails with `error` (matching `match`); the target is as before."""
    before = snapshot(victim.pid)
    term, slave = spawn.new_terminal()
    try:
        with pytest.raises(error, match=match):
            attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(slave)
    assert snapshot(victim.pid) == before


def fail_at(spawn: Spawner, victim: Victim, step: str, monkeypatch) -> None:
    monkeypatch.setenv("REPTYR_TMUX_FAULT", step)
    term, slave = spawn.new_terminal()
    try:
        with pytest.raises(InjectedFault):
            attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(slave)


def test_step_lists_match_what_the_engine_does(spawn):
    """Keeps the matrix honest: the steps below are exactly those a real attach runs."""
    term, slave = spawn.new_terminal()
    leader = spawn.on_pty(ECHO)
    assert attach(leader.pid, os.ttyname(slave)).steps == LEADER_STEPS
    term2, slave2 = spawn.new_terminal()
    job = spawn.in_shell(" ".join(ECHO))
    assert attach(job.pid, os.ttyname(slave2)).steps == JOB_STEPS
    os.close(slave)
    os.close(slave2)


@pytest.mark.parametrize("step", LEADER_STEPS)
def test_fault_in_session_leader_is_undone(spawn, monkeypatch, step):
    undone_on_its_old_terminal(spawn, spawn.on_pty(ECHO), step, monkeypatch)


def undone_on_its_old_terminal(spawn: Spawner, victim: Victim, step: str, monkeypatch) -> None:
    before = snapshot(victim.pid)
    fail_at(spawn, victim, step, monkeypatch)
    assert snapshot(victim.pid) == before
    victim.term.write(b"old terminal\n")
    victim.term.expect("got: old terminal")


@pytest.mark.parametrize("step", JOB_STEPS)
def test_fault_in_shell_job_is_undone(spawn, monkeypatch, step):
    victim = spawn.in_shell(" ".join(ECHO))
    before = snapshot(victim.pid)
    fail_at(spawn, victim, step, monkeypatch)
    after = snapshot(victim.pid)
    if step in ONE_WAY:
        # The one documented exception: it stays in the session setsid gave it, without a terminal.
        assert after["session"] == (victim.pid, victim.pid, 0)
        after["session"] = before["session"]
    assert after == before
    if step in ONE_WAY:
        os.kill(victim.pid, signal.SIGWINCH)  # it still runs and still writes to its old terminal
        victim.term.expect("winch")
        return
    if victim.stat().tpgid != victim.pid:
        victim.term.expect("Stopped")  # its shell saw the stop: bring it back as a user would
        victim.term.write(b"fg\n")
        wait_for(lambda: victim.stat().tpgid == victim.pid, what="fg to give it the terminal")
    victim.term.write(b"old terminal\n")
    victim.term.expect("got: old terminal")


@pytest.mark.parametrize("step", ONE_WAY)
def test_a_failure_after_setsid_says_what_the_program_was_left_with(spawn, monkeypatch, step):
    """Past setsid the undo cannot give its session back: one sentence says so and what to do, instead of
    an undo of the group change that cannot apply any more ("setpgid failed inside the target")."""
    victim = spawn.in_shell(" ".join(ECHO))
    monkeypatch.setenv("REPTYR_TMUX_FAULT", step)
    term, slave = spawn.new_terminal()
    try:
        with pytest.raises(InjectedFault) as failed:
            attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(slave)
    said = str(failed.value)
    assert "could not undo" not in said and "inside the target" not in said, said
    assert said.endswith(f"keeps running on its old terminal, but in a session of its own (Linux cannot undo "
                         "setsid), so ^C and ^Z typed there no longer reach it: signal it by its pid instead "
                         f"(kill -INT {victim.pid})"), said
    assert said.count(". ") == 0  # one sentence


@pytest.mark.parametrize("step", ["infect", "open-tty", "set-ctty", "dup-over-2"])
def test_fault_in_32bit_target_is_undone(spawn, monkeypatch, echo32, step):
    undone_on_its_old_terminal(spawn, spawn.on_pty([echo32]), step, monkeypatch)


@pytest.mark.parametrize("step", LEADER_STEPS)
def test_registers_survive_a_fault_at_each_step(spawn, monkeypatch, canary, step):
    victim = spawn.on_pty([canary])
    fail_at(spawn, victim, step, monkeypatch)
    victim.term.write(b"after fault\n")
    victim.term.expect("got: after fault canary ok")


def test_registers_survive_a_successful_move(spawn, canary):
    victim = spawn.on_pty([canary])
    term, slave = spawn.new_terminal()
    try:
        attach(victim.pid, os.ttyname(slave))
    finally:
        os.close(slave)
    term.write(b"moved\n")
    term.expect("got: moved canary ok")
