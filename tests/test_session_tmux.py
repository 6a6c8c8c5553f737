"""Session mode as a person meets it: a shell's full-screen job picked from the menu in a real attached
tmux client, keys typed into that client."""

from __future__ import annotations

import subprocess
import termios
from pathlib import Path

from conftest import CLI, Shell, wait_for

from reptyr_tmux import proc

ROOT = Path(__file__).parent.parent


def start_full_screen(shell: Shell, command: str) -> int:
    """Start `command` as the shell's foreground job and wait until it has taken the terminal raw."""
    shell.term.write(command.encode() + b"\n")
    job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell.pid and s.state != "Z"),
                                None), what=command)
    wait_for(lambda: not termios.tcgetattr(shell.term.master)[3] & termios.ICANON, what="raw mode")
    return job


def pick(tmux, client, pid: int) -> None:
    wait_for(lambda: str(pid) in [line.split()[0] for line in listed(tmux)], 5,
             "the job in the menu (a shell's child is left out for its first second)")
    client.type(b"\x02A")  # prefix + A, typed into the client
    client.wait("adopt which process?")
    client.type(client.menu_key(pid).encode())
    wait_for(lambda: len(tmux.windows()) == 2, what="the adoption window")


def listed(tmux) -> list[str]:
    return subprocess.run([*CLI, "pick", "-L", tmux.socket, "--list"], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_vim_from_a_shell_is_painted_at_once_and_the_shell_follows(tmux, shell, client):
    vim = start_full_screen(shell, "vim -u NONE -N /etc/services")
    subprocess.run([str(ROOT / "reptyr.tmux"), "-L", tmux.socket], check=True)
    pick(tmux, client, vim)
    tmux.wait_screen("main:1", "Network services")  # painted without a key
    assert tmux.pane("main:1", "#{alternate_on} #{pane_in_mode} #{pane_current_command}") == "1 0 vim"
    shell.term.expect("moved to tmux session 'main', window 1")  # the old terminal explains itself
    client.type(b":q\r")
    wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="vim to quit")
    screen = tmux.wait_screen("main:1", "$")
    assert "Network services" not in screen  # back on a clean normal screen
    assert tmux.pane("main:1", "#{alternate_on}") == "0"
    client.type(b"cat\r")  # job control in the pane, keys typed into the client
    wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "cat", what="cat to start")
    client.type(b"\x1a")
    tmux.wait_screen("main:1", "Stopped")
    client.type(b"jobs\r")
    tmux.wait_screen("main:1", "cat\n")
    client.type(b"fg\r")
    wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "cat", what="fg")
    client.type(b"meow\r")
    tmux.wait_screen("main:1", "meow\nmeow")
    client.type(b"\x03")
    wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="^C to end cat")
    client.type(b"exit\r")  # the session ends: its pane closes, as a terminal window would
    wait_for(lambda: len(tmux.windows()) == 1, what="the pane to close")
