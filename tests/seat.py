"""A person at a tmux client, for tests of the key binding and the menu: a user of their own.

The menu lists the user's processes on every other terminal, so as root it would list every other
test's victims too (several suites share this machine) and run out of rows. A fresh user (users.py's
new_user) has exactly the processes the test starts: its tmux server, the key binding made by
plugin-init, a `tmux attach` client on a pty the test owns (keys are typed into that pty), victims on
ptys of their own. users.py removes the user and everything of it afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from conftest import ECHO, Spawner, Terminal, Victim, menu_key_on, rendered
from realssh import SIZE, SYSTEM_PYTHON, UserTmux, attached_client, spawn_on_pty, user_tmux
from users import User, as_user, new_user, user_env

from reptyr_tmux.mux.tmux import MENUS_FROM


class Seat:
    def __init__(self, user: User, server: UserTmux, product: list[str], spawn: Spawner):
        self.user, self.server, self.product, self.spawn = user, server, product, spawn
        self.socket = server.socket
        self.client: Terminal | None = None
        echo = user.home / "echo.py"  # where the user may read it, wherever the checkout lives
        shutil.copy(ECHO[1], echo)
        echo.chmod(0o644)
        self.echo = [SYSTEM_PYTHON, str(echo)]

    @property
    def uid(self) -> int:
        return self.user.uid

    @property
    def home(self):
        return self.user.home

    def tmux(self, *args: str) -> str:
        return self.server(*args)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return as_user(self.user, [*self.product, *args])

    def listed(self) -> list[str]:
        """`reptyr-tmux pick --list` as this user, for this server."""
        result = self.cli("pick", "-L", self.socket, "--list")
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def on_pty(self, argv: list[str], ready: str = "ready") -> Victim:
        """argv as this user, the session leader of a fresh pty (like a program sshd started);
        ECHO's interpreter and script mean the user's (SYSTEM_PYTHON, its copy of echo.py)."""
        ours = dict(zip(ECHO, self.echo))
        argv = [ours.get(arg, arg) for arg in argv]
        env = user_env(self.user, {"PS1": "$ ", "TERM": "xterm"})
        pid, master, slave_path = spawn_on_pty(argv, env, self.user)
        victim = Victim(pid, Terminal(master, slave_path), children=[pid])
        self.spawn.victims.append(victim)
        self.spawn.terminals.append(victim.term)
        if ready:
            victim.term.expect(ready)
        return victim

    def attach(self) -> Terminal:
        """A real `tmux attach` of this user on a pty whose master the test holds."""
        self.client = attached_client(self.server)
        self.spawn.terminals.append(self.client)  # closing it kills the client
        return self.client

    def open_menu(self) -> str:
        """prefix + A typed into the client; the menu as drawn (raw bytes, decoded)."""
        assert self.client is not None
        if self.server.version() < MENUS_FROM:
            pytest.skip("tmux before 3.0 has no display-menu (test_menu's numbered window covers prefix + A)")
        self.client.write(b"\x02A")
        self.client.expect("adopt which process?")
        return self.client.expect("\u2518")  # the menu's bottom right corner: all of it is drawn

    def screen(self) -> str:
        """The client's screen as a person sees it now."""
        assert self.client is not None
        self.client.quiet_for(0.05)
        return rendered(self.client.drawn, SIZE)

    def menu_key(self, pid: int) -> str:
        """The key of `pid`'s row in the menu now open, read off the client's screen."""
        assert self.client is not None
        return menu_key_on(rendered(self.client.drawn, SIZE), pid)

    def messages(self) -> str:
        """tmux's message log; before 3.0 each client keeps its own, asked for by name."""
        clients = self.tmux("list-clients", "-F", "#{client_tty}").split()
        return "".join([self.tmux("show-messages"), *(self.tmux("show-messages", "-t", c) for c in clients)])

    def panes_in_mode(self) -> list[str]:
        return [line for line in self.tmux("list-panes", "-a", "-F", "#{pane_id} #{pane_mode}").splitlines()
                if line.split()[1:]]


@contextlib.contextmanager
def a_seat(spawn: Spawner, product: list[str]) -> Iterator[Seat]:
    """A fresh user with a tmux server of their own, prefix + A bound by plugin-init; gone afterwards."""
    with new_user("rts") as user, user_tmux(user) as server:
        seat = Seat(user, server, product, spawn)
        plugin = seat.cli("plugin-init", "-L", seat.socket)  # what reptyr.tmux ends with
        assert plugin.returncode == 0, (plugin.returncode, plugin.stdout, plugin.stderr)
        yield seat
