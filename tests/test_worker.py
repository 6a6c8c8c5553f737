"""The engine's own process (worker.py): started ahead of its work, it loads ptrace's modules while the
front end opens the pane; the front end itself never loads them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from reptyr_tmux.engine.worker import Apart
from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.launch import python_argv


def test_the_front_end_does_not_load_ptrace():
    """adopt's modules, as the key binding loads them: ptrace (and logging, traceback) stay out."""
    code = ("import sys, reptyr_tmux.frontends.cli, reptyr_tmux.mux.adopt; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ptrace', 'logging', 'hashlib')))")
    argv = python_argv("reptyr_tmux")
    out = subprocess.run([*argv[:-1], argv[-1].split("import runpy")[0] + code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def loaded(prefix: str) -> list[str]:
    return sorted(m for m in sys.modules if m.startswith(prefix))


def pid_and_sum(a: int, b: int = 0) -> tuple[int, int]:
    return os.getpid(), a + b


def refuse() -> None:
    raise ReptyrError("no such thing")


def test_the_engine_has_ptrace_loaded_before_it_is_asked():
    with Apart() as engine:
        assert "ptrace.binding" in engine.run(loaded, "ptrace")


def test_arguments_and_results_travel_and_the_child_is_reaped():
    with Apart() as engine:
        child = engine.child
        pid, total = engine.run(pid_and_sum, 2, b=3)
    assert (pid, total) == (child, 5)
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def test_never_asked_it_ends_at_once(tmp_path):
    with Apart() as engine:
        child = engine.child
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def test_an_engine_that_died_is_said_so():
    with Apart() as engine:
        os.kill(engine.child, 9)
        with pytest.raises(ReptyrError, match="engine's process died"):
            engine.run(loaded, "x")


def test_its_refusal_comes_back_as_ours():
    with Apart() as engine, pytest.raises(ReptyrError, match="no such thing"):
        engine.run(refuse)


def moved_then_signalled_in_the_cleanups() -> str:
    """A move that is done, and a SIGTERM (a front end's, passed on) comes while its cleanups run."""
    from reptyr_tmux.engine.transaction import Transaction

    with Transaction() as tx:
        tx.step("detach", lambda: None, lambda _: os.kill(os.getpid(), signal.SIGTERM), always=True)
    return "moved"


def test_a_signal_during_a_finished_moves_cleanups_does_not_lose_the_move():
    """Past the transaction's last look, a signal is delivered when the cleanups end: the engine must not
    die of it then, or the front end is told "died" of a target it did move (and hangs it up)."""
    with Apart() as engine:
        assert engine.run(moved_then_signalled_in_the_cleanups) == "moved"


def test_a_signal_passed_on_before_the_first_step_is_answered_there():
    """A ^C while the engine still loads or looks (no step yet) undoes nothing and says so, instead of
    killing the engine ("the engine's process died")."""
    from reptyr_tmux.errors import Interrupted

    with Apart() as engine:
        os.kill(engine.child, signal.SIGINT)
        with pytest.raises(Interrupted, match="interrupted by SIGINT"):
            engine.run(moved_then_signalled_in_the_cleanups)


def test_a_detached_call_leaves_no_zombie_behind():
    """run_detached's process is not ours to reap: attach -T's relay (hours) made one, in steal's SIGHUP
    hand-back, and kept it as a zombie for its whole life."""
    from reptyr_tmux import proc
    from reptyr_tmux.engine.worker import run_detached

    def ours() -> set[int]:
        return {s.pid for s in proc.all_stats() if s.ppid == os.getpid()}

    before = ours()
    ended, still_open = os.pipe()  # its copy of still_open closes when it exits
    run_detached(lambda: None)
    os.close(still_open)
    assert os.read(ended, 1) == b""
    os.close(ended)
    assert ours() - before == set()


def test_a_detached_call_with_sigchld_ignored():
    """A front end started with SIGCHLD ignored (inherited): the kernel reaps the middle child itself,
    and waiting for it must not fail the adoption that asked for the detached call."""
    from reptyr_tmux.engine.worker import run_detached

    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        ended, still_open = os.pipe()
        run_detached(lambda: None)
        os.close(still_open)
        assert os.read(ended, 1) == b""
        os.close(ended)
    finally:
        signal.signal(signal.SIGCHLD, previous)
