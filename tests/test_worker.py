"""The engine's own process (worker.py): started ahead of its work, it loads ptrace's modules while the
front end opens the pane; the front end itself never loads them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.launch import python_argv
from reptyr_tmux.worker import Apart


def test_the_front_end_does_not_load_ptrace():
    """adopt's modules, as the key binding loads them: ptrace (and logging, traceback) stay out."""
    code = ("import sys, reptyr_tmux.cli, reptyr_tmux.adopt; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ptrace', 'logging', 'hashlib')))")
    argv = python_argv("reptyr_tmux")
    out = subprocess.run([*argv[:-1], argv[-1].split("import runpy")[0] + code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_engine_has_ptrace_loaded_before_it_is_asked():
    with Apart(lambda: sorted(m for m in sys.modules if m == "ptrace.binding")) as engine:
        assert engine.run() == ["ptrace.binding"]


def test_arguments_and_results_travel_and_the_child_is_reaped():
    with Apart(lambda a, b: (os.getpid(), a + b)) as engine:
        child = engine.child
        pid, total = engine.run(2, 3)
    assert (pid, total) == (child, 5)
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def test_never_asked_it_ends_without_doing_anything(tmp_path):
    mark = tmp_path / "ran"
    with Apart(lambda: mark.write_text("ran")) as engine:
        child = engine.child
    assert not mark.exists()
    with pytest.raises(ChildProcessError):
        os.waitpid(child, os.WNOHANG)


def test_an_engine_that_died_is_said_so():
    with Apart(lambda: None) as engine:
        os.kill(engine.child, 9)
        with pytest.raises(ReptyrError, match="engine's process died"):
            engine.run()


def test_its_refusal_comes_back_as_ours():
    def refuse():
        raise ReptyrError("no such thing")

    with Apart(refuse) as engine, pytest.raises(ReptyrError, match="no such thing"):
        engine.run()
