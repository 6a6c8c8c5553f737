"""GNU screen: adopt into a new screen window (both modes) and the in-window picker, for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import CLI, ECHO, wait_for
from test_steal import SshdLike

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/screen") and not os.environ.get("CI"),
                                reason="GNU screen is not installed (apt-get install screen)")


class Screen:
    def __init__(self, name: str):
        self.name = name
        subprocess.run(["screen", "-dmS", name, "-c", "/dev/null"], check=True,
                       env=dict(os.environ, TERM="xterm"))
        wait_for(lambda: name in subprocess.run(["screen", "-ls"], capture_output=True, text=True).stdout,
                 what="screen to start")

    def x(self, *args: str, window: str | None = None) -> None:
        where = ["-p", window] if window else []
        subprocess.run(["screen", "-S", self.name, *where, "-X", *args], check=True)

    def text(self, window: str, tmp_path) -> str:
        out = tmp_path / f"hardcopy-{time.monotonic_ns()}"
        self.x("hardcopy", str(out), window=window)
        wait_for(out.exists, what="the hardcopy")
        return out.read_text(errors="replace")

    def wait_text(self, window: str, text: str, tmp_path) -> str:
        return wait_for(lambda: (t := self.text(window, tmp_path)) and text in t and t, 10, repr(text))


@pytest.fixture
def screen():
    session = Screen(f"reptyr-test-{os.getpid()}-{time.monotonic_ns()}")
    yield session
    subprocess.run(["screen", "-S", session.name, "-X", "quit"], capture_output=True)


def adopt(screen: Screen, pid: int, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, "adopt", "--screen-session", screen.name, *extra, str(pid)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result


def test_adopt_into_a_screen_window(spawn, screen, tmp_path):
    victim = spawn.on_pty(ECHO)
    result = adopt(screen, victim.pid)
    assert "attach mode" in result.stdout
    screen.x("stuff", "hello screen\n", window="python")
    screen.wait_text("python", "got: hello screen", tmp_path)
    tty = os.readlink(f"/proc/{victim.pid}/fd/0")
    assert victim.stat().tty_dev == os.stat(tty).st_rdev


def test_whole_session_into_a_screen_window(screen, tmp_path):
    sshd = SshdLike(tmp_path)
    try:
        sshd.type(0, "bash -c 'while :; do echo screen-tick; sleep 0.2; done'")
        sshd.wait_log(0, "screen-tick")
        result = adopt(screen, sshd.job(0))
        assert "session mode" in result.stdout
        screen.wait_text("bash", "screen-tick", tmp_path)
    finally:
        sshd.close()


def test_screen_picker_adopts_the_chosen_process(spawn, screen, tmp_path):
    victim = spawn.on_pty(ECHO)
    old_tty = victim.stat().tty_nr
    screen.x("screen", "-t", "pick", sys.executable, "-m", "reptyr_tmux", "screen-pick")
    listing = screen.wait_text("pick", "number (Enter to cancel)", tmp_path)
    line = next(line for line in listing.splitlines() if f" {victim.pid} " in f" {line} ")
    screen.x("stuff", line.split()[0] + "\n", window="pick")
    wait_for(lambda: victim.stat().tty_nr not in (0, old_tty), what="the adoption")
    screen.x("stuff", "picked in screen\n", window="python")
    screen.wait_text("python", "got: picked in screen", tmp_path)



def test_adopt_dash_dash_screen_pid_as_the_readme_writes_it(spawn, screen, tmp_path):
    """Inside screen (STY set), `adopt --screen PID`: the pid is not taken for a session name."""
    victim = spawn.on_pty(ECHO)
    result = subprocess.run([*CLI, "adopt", "--screen", str(victim.pid)], capture_output=True, text=True,
                            timeout=30, env=dict(os.environ, STY=screen.name))
    assert result.returncode == 0, result.stderr
    screen.x("stuff", "by sty\n", window="python")
    screen.wait_text("python", "got: by sty", tmp_path)
