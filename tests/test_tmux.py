"""The tmux plugin on a real tmux server (private socket): adopt, picker, key binding, safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI, ECHO, VICTIMS, Terminal, Tmux, gone, wait_for
from realssh import attached_client

from reptyr_tmux import proc
from reptyr_tmux.mux.tmux import POPUPS_FROM
from reptyr_tmux.native.holder import READY_COMMS

pytestmark = pytest.mark.tmux  # run again with each other tmux release in CI (.ci/tmux-versions.sh)

ROOT = Path(__file__).resolve().parent.parent


def adopt(tmux: Tmux, pid: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", *extra, str(pid)],
                          capture_output=True, text=True, timeout=30, env=env)


def adopted(tmux: Tmux, victim) -> str:
    result = adopt(tmux, victim.pid)
    assert result.returncode == 0, result.stderr
    return "main:1"


def test_adopt_echo_program_into_a_window(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    pane = adopted(tmux, victim)
    tmux("send-keys", "-t", pane, "hello pane", "Enter")
    tmux.wait_screen(pane, "got: hello pane")
    assert victim.stat().tty_dev == os.stat(tmux.pane(pane, "#{pane_tty}")).st_rdev
    assert tmux.pane(pane, "#{window_name}") == "python"


def test_window_names_show_a_hash_as_it_is(spawn, tmux):
    """3.0 takes new-window -n literally, the others read it as a format: '#' is doubled only there."""
    victim = spawn.on_pty([*ECHO, "--name", "a#b#{c}"])
    adopted(tmux, victim)
    # (the first window's own name is tmux's automatic rename at work: "tmux" for a moment, then "bash")
    assert tmux("list-windows", "-t", "main", "-F", "#{window_name}").split()[1:] == ["a#b#{c}"]


def masters_of(tty_path: str) -> set[int]:
    """Every process holding the master side of the pty `tty_path` (from fdinfo's tty-index)."""
    index = int(tty_path.rsplit("/", 1)[1])
    return {pid for pid in proc.all_pids() for fd, link in proc.fd_links(pid).items()
            if link == "/dev/ptmx" and proc.tty_index(pid, fd) == index}


def test_no_relay_process_and_a_tiny_holder(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    pane = adopted(tmux, victim)
    tty = tmux.pane(pane, "#{pane_tty}")
    assert masters_of(tty) == {int(tmux("display-message", "-p", "#{pid}"))}  # only tmux reads it
    holder = int(tmux.pane(pane, "#{pane_pid}"))
    wait_for(lambda: proc.read_stat(holder).comm in READY_COMMS, what="the holder")
    rss_kb = int(proc.read_status(holder)["VmRSS"].split()[0])
    print(f"holder RSS after adoption: {rss_kb} kB")
    assert rss_kb < 1700


def test_resize_ctrl_c_reach_the_target(spawn, tmux):
    victim = spawn.on_pty([*ECHO, "--catch-int"])
    pane = adopted(tmux, victim)
    if tmux.version() < (3, 1):  # 3.0 applies resize-window only once a client shows the window, 2.x has
        # none: the window takes the size of a client that shows it (a row less: its status line)
        spawn.terminals.append(attached_client(tmux, term="xterm", size=(77, 22)))
    else:
        tmux("resize-window", "-t", pane, "-x", "77", "-y", "21")
    tmux.wait_screen(pane, "winch 21x77")
    tmux("send-keys", "-t", pane, "C-c")
    tmux.wait_screen(pane, "sigint")


def test_less_and_curses_repaint_without_a_key(spawn, tmux, tmp_path):
    text = tmp_path / "numbers.txt"
    text.write_text("".join(f"line number {n}\n" for n in range(1, 200)))
    less = spawn.on_pty(["env", "TERM=xterm", "less", str(text)], ready="line number 1")
    curses_prog = spawn.on_pty(["env", "TERM=xterm", sys.executable, str(VICTIMS / "curses_screen.py")],
                               ready="CURSES-SCREEN")
    for victim in (less, curses_prog):
        result = adopt(tmux, victim.pid)
        assert result.returncode == 0, result.stderr
    windows = tmux.windows()
    tmux.wait_screen(f"main:{windows[1]}", "line number 5")
    tmux.wait_screen(f"main:{windows[2]}", "CURSES-SCREEN ready")


def test_kill_pane_hangs_up_the_target(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    pane = adopted(tmux, victim)
    tmux("kill-pane", "-t", pane)
    _, status = os.waitpid(victim.pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP


def test_target_exit_closes_the_pane_and_the_holder(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    pane = adopted(tmux, victim)
    holder = int(tmux.pane(pane, "#{pane_pid}"))
    os.kill(victim.pid, signal.SIGTERM)
    wait_for(lambda: tmux.windows() == ["0"], what="the pane to close")
    wait_for(lambda: gone(holder), what="the holder to exit")


def test_remain_on_exit_keeps_the_pane(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    assert adopt(tmux, victim.pid, "--remain-on-exit").returncode == 0
    os.kill(victim.pid, signal.SIGTERM)
    wait_for(lambda: tmux.pane("main:1", "#{pane_dead}") == "1", what="the pane to be dead but shown")


def test_split_placement_names_the_pane(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    assert adopt(tmux, victim.pid, "--split-h").returncode == 0
    assert tmux("list-panes", "-t", "main:0", "-F", "#{pane_title}").split()[-1] == "python"


def test_refusal_leaves_no_pane_and_says_why(spawn, tmux):
    victim = spawn.detached(ECHO)
    result = adopt(tmux, victim.pid)
    assert result.returncode == 2 and "use -s" in result.stderr
    assert tmux.windows() == ["0"]


def test_failure_mid_attach_closes_the_pane_and_spares_the_target(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    result = adopt(tmux, victim.pid, env=dict(os.environ, REPTYR_TMUX_FAULT="set-ctty"))
    assert result.returncode != 0 and "set-ctty" in result.stderr
    wait_for(lambda: tmux.windows() == ["0"], what="the pane to close")
    victim.term.write(b"still on the old terminal\n")
    victim.term.expect("got: still on the old terminal")


def test_recycled_pid_is_refused(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    real = victim.stat().starttime
    result = adopt(tmux, victim.pid, "--start-time", str(real - 1))
    assert result.returncode == 2 and "reused" in result.stderr
    assert tmux.windows() == ["0"]


def test_check_explains_without_touching(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    result = adopt(tmux, victim.pid, "--check")
    assert result.returncode == 0 and "can be adopted" in result.stdout
    assert tmux.windows() == ["0"] and victim.stat().tty_dev != 0


def test_stdio_adoption_of_a_process_without_terminal(spawn, tmux):
    victim = spawn.detached(ECHO)
    assert adopt(tmux, victim.pid, "-s").returncode == 0
    tmux("send-keys", "-t", "main:1", "no tty before", "Enter")
    tmux.wait_screen("main:1", "got: no tty before")


# -- the key binding and the picker ---------------------------------------------------------------


def test_plugin_binds_default_and_custom_keys(tmux):
    subprocess.run([str(ROOT / "reptyr.tmux"), "-L", tmux.socket], check=True)
    assert "pick" in tmux.key_binding("A")
    tmux("set-option", "-g", "@reptyr-key", "F")
    subprocess.run([str(ROOT / "reptyr.tmux"), "-L", tmux.socket], check=True)
    assert "pick" in tmux.key_binding("F")


def test_plugin_init_says_which_tmux_it_found(spawn, tmux):
    client = attach_client(tmux, spawn)
    result = subprocess.run([*CLI, "plugin-init", "-L", tmux.socket], capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "")  # not a terminal: stdout would be view-mode
    found = tmux("-V").split()[-1]
    client.expect(f"reptyr-tmux is ready: prefix + A adopts a running process (tmux {found}")  # status line


def pick_list(tmux: Tmux, *extra: str) -> list[str]:
    out = subprocess.run([*CLI, "pick", "-L", tmux.socket, "--list", *extra], capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def test_picker_lists_outside_processes_but_not_this_servers_panes(spawn, tmux):
    outside = spawn.on_pty(ECHO)
    tmux("new-window", "-t", "main", " ".join(ECHO))
    inside = int(wait_for(lambda: tmux("list-panes", "-t", "main:1", "-F", "#{pane_pid}").strip()))
    listed = [int(line.split()[0]) for line in pick_list(tmux)]
    assert outside.pid in listed and inside not in listed
    assert inside in [int(line.split()[0]) for line in pick_list(tmux, "--all")]


def attach_client(tmux: Tmux, spawn) -> Terminal:
    client = attached_client(tmux, term="xterm")  # a 100x30 pty; closed (the client killed) with spawn's
    spawn.terminals.append(client)
    return client


def test_popup_placement(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    client = attach_client(tmux, spawn)
    old_tty = victim.stat().tty_dev
    result = adopt(tmux, victim.pid, "--popup")
    if tmux.version() < POPUPS_FROM:  # no display-popup: refused in one sentence, nothing touched
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr.startswith("reptyr-tmux: --popup needs tmux 3.2 or newer (this is tmux ")
        assert victim.stat().tty_dev == old_tty and tmux.windows() == ["0"]
        return
    assert result.returncode == 0, result.stderr
    client.expect("winch")  # the program's first words, drawn in the popup on the client's screen
    client.write(b"in the popup\r")
    client.expect("got: in the popup")
    assert tmux.windows() == ["0"]


def test_readopt_in_attach_mode_moves_it_again_and_closes_the_old_pane(spawn, tmux):
    victim = spawn.on_pty(ECHO)
    for round_ in range(3):
        result = adopt(tmux, victim.pid, "--mode", "attach")
        assert result.returncode == 0, result.stderr
        wait_for(lambda: len(tmux.windows()) == 2, what="only the newest adoption window left")
        window = tmux.windows()[-1]
        tmux("send-keys", "-t", f"main:{window}", f"round {round_}", "Enter")
        tmux.wait_screen(f"main:{window}", f"got: round {round_}")
