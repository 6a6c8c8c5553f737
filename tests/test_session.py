"""Session move: a shell and every job of its session onto a new terminal, on real ptys and a real bash."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import CLI, ECHO, Shell, wait_for
from test_faults import snapshot

from reptyr_tmux import proc
from reptyr_tmux.engine.session import move_session, survey_session
from reptyr_tmux.errors import InjectedFault, Refusal

# Every step a session move of the shell below runs, in order (test_step_list_is_exact keeps it so).
BEFORE_THE_SWITCH = ["watch-new-tty", "copy-termios", "hold-member", "hold-threads", "map-scratch",
                     "open-tty", "save-fd", "old-foreground-to-leader", "note-pending", "check-new-tty"]
THE_SWITCH = ["release-old-ctty", "set-ctty"]  # undone as far as Linux allows (see session.py)
AFTER_THE_SWITCH = ["set-foreground", "dup-over", "tell-old-terminal"]


def with_jobs(shell: Shell) -> dict[str, int]:
    """A background job, a stopped job and a foreground job reading the terminal."""
    shell.run("sleep 1000 &")
    shell.term.write(b"sleep 1001\n")
    sleeper = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.sid == shell.pid
                                     and proc.cmdline(s.pid)[-1:] == ["1001"]), None), what="sleep 1001")
    wait_for(lambda: proc.read_stat(sleeper).state == "S", what="sleep 1001 to run")
    shell.term.write(b"\x1a")  # ^Z
    shell.term.expect("Stopped")
    shell.term.expect("$ ")
    shell.term.write((" ".join([*ECHO, "--catch-int"]) + "\n").encode())
    shell.term.expect("ready")
    echo = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.sid == shell.pid
                                  and ECHO[-1] in proc.cmdline(s.pid)), None), what="echo.py")
    return {"background": _by_arg(shell, "1000"), "stopped": sleeper, "foreground": echo}


def _by_arg(shell: Shell, arg: str) -> int:
    """The session's process whose last argument is `arg`, once its fork has exec'd."""
    return wait_for(lambda: next((s.pid for s in proc.all_stats()
                                  if s.sid == shell.pid and proc.cmdline(s.pid)[-1:] == [arg]), None),
                    what=f"the job with {arg}")


def move(spawn, shell: Shell, pid: int, **kwargs):
    term, slave = spawn.new_terminal()
    path = os.ttyname(slave)
    term.slave_path = path
    try:
        return term, move_session(survey_session(pid), path, **kwargs)
    finally:
        os.close(slave)


def test_the_whole_session_moves_and_job_control_works_there(spawn, shell):
    jobs = with_jobs(shell)
    before = {pid: proc.read_stat(pid) for pid in shell.members()}
    term, moved = move(spawn, shell, jobs["foreground"], note="moved to the test's terminal")
    new_dev = os.stat(term.slave_path).st_rdev
    assert moved.leader == shell.pid and sorted(moved.members) == sorted(before)
    shell.term.expect("moved to the test's terminal")  # the old terminal says where the session went
    for pid, old in before.items():
        now = proc.read_stat(pid)
        assert (now.sid, now.pgid) == (old.sid, old.pgid)
        assert all(target == term.slave_path for fd, target in
                   {fd: proc.fd_target(pid, fd) for fd in proc.open_fds(pid)}.items() if fd <= 2)
    assert proc.read_stat(shell.pid).tty_dev == new_dev  # the shell has the new controlling terminal
    assert os.tcgetpgrp(term.master) == before[jobs["foreground"]].pgid  # the job is still in front
    assert proc.read_stat(jobs["stopped"]).state == "T"  # a stopped job stays stopped
    assert proc.read_stat(jobs["background"]).state == "S"
    term.write(b"hello\n")
    term.expect("got: hello")
    term.write(b"\x03")  # ^C from the new terminal reaches the foreground job
    term.expect("sigint")
    shell.term.close()  # the old terminal goes away (an ssh connection dropped): nobody is hung up
    term.write(b"still here\n")
    term.expect("got: still here")
    os.kill(jobs["foreground"], signal.SIGTERM)  # the job ends: its shell is there at its prompt
    term.expect("$ ")
    term.write(b"jobs\n")
    term.expect("sleep 1001")
    term.write(b"fg %2\n")  # job control works on the new terminal: fg, ^Z, bg
    wait_for(lambda: proc.read_stat(jobs["stopped"]).state == "S", what="fg to continue the job")
    assert os.tcgetpgrp(term.master) == before[jobs["stopped"]].pgid
    term.write(b"\x1a")
    term.expect("Stopped")
    wait_for(lambda: proc.read_stat(jobs["stopped"]).state == "T", what="^Z to stop the job again")
    term.expect("$ ")
    term.write(b"echo $((6*7))\n")
    term.expect("42")


def test_running_jobs_lose_their_controlling_terminal_as_documented(spawn, shell):
    jobs = with_jobs(shell)
    term, moved = move(spawn, shell, jobs["foreground"])
    assert moved.running_jobs == 3
    assert proc.read_stat(jobs["background"]).tty_dev is None  # Linux gives it back to none of them
    term.write(b"\x03")
    term.expect("sigint")  # yet the terminal still signals its foreground group


def test_step_list_is_exact(spawn, shell, monkeypatch):
    jobs = with_jobs(shell)
    _, moved = move(spawn, shell, jobs["foreground"], note="x")
    assert moved.warnings == []
    assert list(dict.fromkeys(moved.steps)) == BEFORE_THE_SWITCH + THE_SWITCH + AFTER_THE_SWITCH


def fail_at(spawn, shell, monkeypatch, step: str) -> tuple[dict, dict]:
    """A move of the shell's session that fails at `step`: every member's state before and after."""
    jobs = with_jobs(shell)
    members = shell.members()
    before = {pid: _full_state(pid) for pid in members}
    foreground = os.tcgetpgrp(shell.term.master)
    monkeypatch.setenv("REPTYR_TMUX_FAULT", step)
    with pytest.raises(InjectedFault):
        move(spawn, shell, jobs["foreground"])
    assert os.tcgetpgrp(shell.term.master) == foreground  # the old terminal's foreground is back
    return before, {pid: _full_state(pid) for pid in members}


@pytest.mark.parametrize("step", BEFORE_THE_SWITCH)
def test_a_fault_before_the_switch_leaves_every_member_as_it_was(spawn, shell, monkeypatch, step):
    before, after = fail_at(spawn, shell, monkeypatch, step)
    assert after == before
    shell.term.write(b"on the old terminal\n")  # the session still works where it was
    shell.term.expect("got: on the old terminal")


@pytest.mark.parametrize("step", THE_SWITCH)
def test_a_fault_in_the_switch_is_undone_but_for_the_jobs_controlling_terminal(spawn, shell, monkeypatch,
                                                                               step):
    before, after = fail_at(spawn, shell, monkeypatch, step)
    assert after[shell.pid] == before[shell.pid]  # the shell has its old terminal back
    for pid in before:  # Linux gives the others none: everything else is as it was
        sid, pgid, _ = before[pid]["session"]
        assert after[pid]["session"] == (sid, pgid, before[pid]["session"][2] if pid == shell.pid else 0)
        assert {k: v for k, v in after[pid].items() if k != "session"} == \
            {k: v for k, v in before[pid].items() if k != "session"}
    shell.term.write(b"on the old terminal\n")
    shell.term.expect("got: on the old terminal")
    shell.term.write(b"\x03")  # its ^C still reaches the job: the terminal signals its foreground group
    shell.term.expect("sigint")


@pytest.mark.parametrize("step", AFTER_THE_SWITCH)
def test_a_fault_after_the_switch_rolls_forward(spawn, shell, monkeypatch, step):
    jobs = with_jobs(shell)
    monkeypatch.setenv("REPTYR_TMUX_FAULT", step)
    term, moved = move(spawn, shell, jobs["foreground"], note="x")
    assert moved.warnings and step in moved.warnings[0]
    term.write(b"hello\n")
    term.expect("got: hello")
    assert proc.read_stat(jobs["stopped"]).state == "T"


def _full_state(pid: int) -> dict:
    state = snapshot(pid)
    state["stopped"] = proc.read_stat(pid).state == "T"
    return state


def test_refuses_a_session_with_someone_elses_process_before_touching_it(spawn, shell, monkeypatch):
    """An ordinary user may not trace a setuid member: the whole move is refused, naming it."""
    jobs = with_jobs(shell)
    before = {pid: _full_state(pid) for pid in shell.members()}
    monkeypatch.setattr(os, "getuid", lambda: 12345)  # look through an ordinary user's eyes
    with pytest.raises(Refusal, match="not entirely yours"):
        survey_session(jobs["foreground"])
    monkeypatch.undo()
    assert {pid: _full_state(pid) for pid in before} == before


def test_a_stopped_process_in_the_shells_own_group_is_refused_and_stays_stopped(spawn, shell):
    """The switch's SIGCONT to the shell's group would wake it the moment it is sent."""
    shell.run("set +m; sleep 1002 & set -m")  # without job control: in the shell's own group
    sleeper = _by_arg(shell, "1002")
    assert proc.read_stat(sleeper).pgid == shell.pid
    os.kill(sleeper, signal.SIGSTOP)
    wait_for(lambda: proc.read_stat(sleeper).state == "T", what="the stop")
    before = {pid: _full_state(pid) for pid in shell.members()}
    term, slave = spawn.new_terminal()
    try:
        with pytest.raises(Refusal, match="would wake it"):
            move_session(survey_session(shell.pid), os.ttyname(slave))
    finally:
        os.close(slave)
    assert {pid: _full_state(pid) for pid in before} == before


def test_a_session_adopted_again_leaves_no_empty_pane_behind(spawn, tmux):
    """Its first pane's holder retires once the session has moved on to the second pane."""
    victim = spawn.in_shell(" ".join(ECHO))
    for _ in range(2):
        result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(victim.pid)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "session mode" in result.stdout + result.stderr, result.stderr
    wait_for(lambda: len(tmux.windows()) == 2, what="the first adoption's pane to close")
    tmux("send-keys", "-t", "main:2", "again", "Enter")
    tmux.wait_screen("main:2", "got: again")


def test_input_typed_ahead_on_the_old_terminal_is_typed_into_the_pane(shell, tmux):
    """A line typed while the job ran (nobody read it yet) and a half-typed one: as on the old terminal,
    they wait for whoever reads next, now in the pane; the shell runs the line once the job ends."""
    shell.term.write(b"sleep 1003\n")
    sleeper = _by_arg(shell, "1003")
    shell.term.write(b"echo carried-$((6*7)) '#{pane_id}'\necho half-")  # (no format may expand)
    shell.term.expect("echo half-")  # echoed: in the old terminal's input queue now
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(sleeper)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "session mode" in result.stdout + result.stderr, result.stderr
    os.kill(sleeper, signal.SIGKILL)  # the job ends: the shell reads what was typed ahead
    tmux.wait_screen("main:1", "carried-42 #{pane_id}")
    tmux("send-keys", "-t", "main:1", "-l", "typed\n")
    tmux.wait_screen("main:1", "half-typed")
