"""Terminal modes follow the program into the new pane, so its first key press works."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import CLI, ECHO, VICTIMS, Tmux, wait_for
from test_tmux import attach_client

from reptyr_tmux.mux import terminfo
from reptyr_tmux.mux.modes import _listening_sockets, parse_spec

pytestmark = pytest.mark.tmux  # run again with each other tmux release in CI (.ci/tmux-versions.sh)

CURSES = ["env", "TERM=xterm", sys.executable, str(VICTIMS / "curses_screen.py")]
FLAGS = "#{keypad_cursor_flag} #{keypad_flag} #{alternate_on} #{mouse_any_flag}"


def adopt(tmux: Tmux, pid: int, *extra: str) -> str:
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", *extra, str(pid)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_first_down_arrow_works_after_adoption_from_a_plain_pty(spawn, tmux):
    victim = spawn.on_pty(CURSES, ready="CURSES-SCREEN")
    out = adopt(tmux, victim.pid)
    assert "cursor-keys" in out and "keypad" in out
    tmux.wait_screen("main:1", "CURSES-SCREEN ready")
    tmux("send-keys", "-t", "main:1", "Down")
    tmux.wait_screen("main:1", "KEY_DOWN")


def test_modes_are_read_exactly_from_another_tmux_pane(spawn, tmux, tmp_path):
    other = Tmux(f"{tmux.socket}-source")
    other("-f", "/dev/null", "new-session", "-d", "-s", "src", "-x", "80", "-y", "24", *CURSES, "--mouse")
    try:
        other.wait_screen("src", "CURSES-SCREEN ready")
        pid = int(other.pane("src", "#{pane_pid}"))
        source_flags = other.pane("src", FLAGS)
        assert source_flags == "1 1 1 1"
        out = adopt(tmux, pid)
        assert "mouse" in out
        wait_for(lambda: tmux.pane("main:1", FLAGS) == source_flags, what="the same modes in the new pane")
        tmux("send-keys", "-t", "main:1", "Down")
        tmux.wait_screen("main:1", "KEY_DOWN")
    finally:
        other.kill()


def test_line_mode_program_gets_no_modes(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    out = adopt(tmux, victim.pid)
    assert "terminal modes" not in out
    assert tmux.pane("main:1", FLAGS) == "0 0 0 0"


def test_user_can_force_and_forbid_modes(spawn, tmux):
    victim = spawn.on_pty(CURSES, ready="CURSES-SCREEN")
    adopt(tmux, victim.pid, "--modes=-keypad,-cursor-keys,+mouse-standard")
    assert tmux.pane("main:1", FLAGS) == "0 0 1 1"
    assert parse_spec("none") == ("none", set(), set())
    with pytest.raises(ValueError, match="unknown terminal mode"):
        parse_spec("+telepathy")


CLICK_LOST = ("tmux 2.x: the click typed into the client never reaches the pane here, though the pane's "
              "mouse modes are carried (cause not found yet)")


@pytest.mark.xfail(Tmux.version() < (3, 0), strict=False, reason=CLICK_LOST)
def test_a_click_still_reaches_a_mouse_program(spawn, tmux):
    """Mouse reporting read from the source pane and carried over: a click on the new pane arrives
    as a curses mouse event."""
    other = Tmux(f"{tmux.socket}-source")
    other("-f", "/dev/null", "new-session", "-d", "-s", "src", "-x", "80", "-y", "24", *CURSES, "--mouse")
    try:
        other.wait_screen("src", "CURSES-SCREEN ready")
        tmux("set-option", "-g", "mouse", "on")
        client = attach_client(tmux, spawn)
        # No redraw: ncurses re-sends its mouse mode when it repaints, which would hide the transfer.
        assert "mouse" in adopt(tmux, int(other.pane("src", "#{pane_pid}")), "--no-redraw")
        client.quiet_for(0.3)
        client.write(b"\x1b[<0;20;8M\x1b[<0;20;8m")  # an SGR press and release, as a terminal sends
        tmux.wait_screen("main:1", "MOUSE-EVENT")
    finally:
        other.kill()


def test_shell_moved_from_a_tmux_pane_still_gets_pastes_bracketed(tmux):
    other = Tmux(f"{tmux.socket}-source")
    other("-f", "/dev/null", "new-session", "-d", "-s", "src", "-x", "80", "-y", "24",
          "env", "PS1=$ ", "bash", "--norc", "--noprofile", "-i")
    try:
        other.wait_screen("src", "$")
        other("send-keys", "-t", "src", "sleep 300 &", "Enter")  # company: the whole session moves
        other.wait_screen("src", "[1]")
        shell = int(other.pane("src", "#{pane_pid}"))
        out = adopt(tmux, shell, "--no-redraw")
        assert "session mode" in out and "bracketed-paste" in out
        tmux("set-buffer", "echo pasted-one\necho pasted-two\n")
        tmux("paste-buffer", "-p", "-t", "main:1")
        time.sleep(0.5)  # bracketed: bash holds the lines for editing instead of running them
        assert "pasted-one\n" not in tmux.screen("main:1").replace("echo pasted-one", "")
        tmux("send-keys", "-t", "main:1", "Enter")
        tmux.wait_screen("main:1", "pasted-two\n")
    finally:
        other.kill()


def test_terminfo_entries_read_as_tput_reads_them():
    """The compiled entries are read by us (no tput per adoption): for every entry of the system's
    terminfo, smcup and smkx as tput says them."""
    checked = 0
    for base in terminfo.SYSTEM_DIRS:
        folders = [os.path.join(base, f) for f in sorted(os.listdir(base))] if os.path.isdir(base) else []
        for folder in filter(os.path.isdir, folders):
            for term in sorted(os.listdir(folder)):
                if not terminfo.NAME.fullmatch(term):
                    continue
                said = [subprocess.run(["tput", "-T", term, name], capture_output=True, text=True,
                                       env={"PATH": "/usr/bin:/bin"}).stdout for name in ("smcup", "smkx")]
                assert terminfo.capabilities(term, "smcup", "smkx") == said, term
                checked += 1
    assert checked >= 20  # ncurses-base alone has ~45 (xterm, screen, tmux, linux, vt100, ...)


def test_a_busy_server_is_still_found_to_ask(tmux):
    """Each client that comes and goes opens and closes a socket in the server: one fd closed while we
    list its fds must not hide the listening socket (it did, about 1 look in 25 beside this loop)."""
    server = int(tmux("display-message", "-p", "#{pid}"))
    busy = subprocess.Popen(["sh", "-c", f"while :; do {' '.join(tmux.argv)} display -p x; done"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        looks = [_listening_sockets(server) for _ in range(1000)]
    finally:
        busy.kill()
        busy.wait()
    assert all(look == [tmux.socket_path] for look in looks), sum(not look for look in looks)
