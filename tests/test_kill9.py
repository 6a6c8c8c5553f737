"""SIGKILL of `reptyr-tmux` (the pid a person sees: `kill -9`, `timeout -s KILL`) while it moves a target:
the engine runs apart (worker.py), so the target ends up exactly as before, or moved whole."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest
from conftest import ECHO, wait_for
from test_cli import cli_on_a_terminal
from test_faults import LEADER_STEPS, snapshot

from reptyr_tmux import proc

RANDOM_KILLS = 50


def left_alone(pid: int) -> bool:
    """Nobody traces it any more (the engine's process has let go)."""
    return int(proc.read_status(pid).get("TracerPid", "0")) == 0 and not _engine_alive(pid)


def _engine_alive(target: int) -> bool:
    return any(proc.cmdline(s.pid)[-1:] == [str(target)] and s.state != "Z" for s in proc.all_stats()
               if s.pid != target and "reptyr_tmux" in " ".join(proc.cmdline(s.pid)))


def kill_the_front_end(spawn, victim, env: dict[str, str] | None = None, after_s: float | None = None
                       ) -> None:
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        front, term = cli_on_a_terminal("attach", str(victim.pid))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    spawn.terminals.append(term)
    if after_s is not None:
        time.sleep(after_s)
        os.kill(front, signal.SIGKILL)
    _, status = os.waitpid(front, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    wait_for(lambda: left_alone(victim.pid), 10, "the engine to let go")


@pytest.mark.parametrize("step", LEADER_STEPS)
def test_sigkill_of_the_command_at_each_step_leaves_the_target_as_it_was(spawn, step):
    victim = spawn.on_pty(ECHO)
    before = snapshot(victim.pid)
    kill_the_front_end(spawn, victim, {"REPTYR_TMUX_FAULT": f"{step}:kill=command"})
    assert snapshot(victim.pid) == before  # its death reached the engine, which undid everything
    victim.term.write(b"still on the old terminal\n")
    victim.term.expect("got: still on the old terminal")


def time_of_a_whole_attach(spawn) -> float:
    victim = spawn.on_pty(ECHO)
    started = time.monotonic()
    front, term = cli_on_a_terminal("attach", str(victim.pid))
    spawn.terminals.append(term)
    term.expect("winch")  # the target speaks on the new terminal
    took = time.monotonic() - started
    os.kill(front, signal.SIGKILL)
    os.waitpid(front, 0)
    return took


def test_random_sigkills_never_damage_the_target(spawn):
    """Killed anywhere from start-up to the end: untouched, undone, or moved whole and then ended by its
    new terminal closing (the relay was the command we killed), by SIGHUP."""
    outcomes = {"as before": 0, "moved, then hung up": 0}
    rng = random.Random(1234)
    whole = time_of_a_whole_attach(spawn)  # kills land from start-up to a little after the end
    for _ in range(RANDOM_KILLS):
        victim = spawn.on_pty(ECHO)
        before = snapshot(victim.pid)
        old_terminal = proc.fd_target(victim.pid, 0)
        kill_the_front_end(spawn, victim, after_s=rng.uniform(0.0, 1.3 * whole))
        # Moved (it may not be dead yet: the hangup of its new terminal is on its way) or not moved.
        if victim.alive() and proc.fd_target(victim.pid, 0) == old_terminal:
            assert snapshot(victim.pid) == before
            victim.term.write(b"ok?\n")
            victim.term.expect("got: ok?")
            outcomes["as before"] += 1
        else:
            _, status = os.waitpid(victim.pid, 0)
            victim.children.remove(victim.pid)
            # Its new terminal closed with the relay: the hangup ends it (one that came while the move
            # still ignored SIGHUP is passed on once its own action is back).
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, status
            outcomes["moved, then hung up"] += 1
    print(f"{RANDOM_KILLS} random SIGKILLs within {1.3 * whole * 1000:.0f} ms: {outcomes}")
    assert sum(outcomes.values()) == RANDOM_KILLS
