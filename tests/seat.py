"""A person at a tmux client, for tests of the key binding and the menu: a user of their own.

The menu lists the user's processes on every other terminal, so as root it would list every other
test's victims too (several suites share this machine) and run out of rows. A fresh user (useradd,
unique name) has exactly the processes the test starts: its tmux server, the key binding bound by
reptyr.tmux, a `tmux attach` client on a pty the test owns (keys are typed into that pty), victims
on ptys of their own. Everything of the user is killed and the account removed afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Spawner, Terminal, Victim, wait_for

from reptyr_tmux.launch import _package_roots

ROWS, COLS = 40, 120
# The test's own interpreter may live where others cannot read (pyenv under /root); the system's runs
# this checkout and its venv's packages just as well, and the key binding then names it.
SYSTEM_PYTHON = "/usr/bin/python3"
PACKAGES = os.pathsep.join(_package_roots())


class Seat:
    def __init__(self, name: str, uid: int, gid: int, home: Path, spawn: Spawner):
        self.name, self.uid, self.gid, self.home, self.spawn = name, uid, gid, home, spawn
        self.socket = f"seat-{secrets.token_hex(4)}"
        self.client: Terminal | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home), "USER": self.name,
                "LOGNAME": self.name, "SHELL": "/bin/sh", "LC_ALL": "C.UTF-8", "TERM": "xterm", "PS1": "$ ",
                "TMUX_TMPDIR": str(self.home),  # its tmux socket goes with its home
                "PYTHONPATH": PACKAGES, **extra}

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env())
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[], capture_output=True,
                              text=True, timeout=30, stdin=subprocess.DEVNULL, cwd=self.home, **kwargs)

    def tmux(self, *args: str) -> str:
        result = self.run(["tmux", "-L", self.socket, *args])
        assert result.returncode == 0, result.stderr
        return result.stdout

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return self.run([SYSTEM_PYTHON, "-m", "reptyr_tmux", *args])

    def listed(self) -> list[str]:
        """`reptyr-tmux pick --list` as this user, for this server."""
        result = self.cli("pick", "-L", self.socket, "--list")
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def on_pty(self, argv: list[str], ready: str = "ready") -> Victim:
        """argv as this user, the session leader of a fresh pty (like a program sshd started)."""
        argv = [SYSTEM_PYTHON if arg == sys.executable else arg for arg in argv]
        pid, master = pty.fork()
        if pid == 0:
            self._become_user()
            os.execvpe(argv[0], argv, self.env())
        victim = Victim(pid, Terminal(master, "?"), children=[pid])
        self.spawn.victims.append(victim)
        self.spawn.terminals.append(victim.term)
        if ready:
            victim.term.expect(ready)
        return victim

    def attach(self) -> Terminal:
        """A real `tmux attach` of this user on a pty whose master the test holds."""
        pid, master = pty.fork()
        if pid == 0:
            self._become_user()
            os.execvpe("tmux", ["tmux", "-L", self.socket, "attach", "-t", "main"], self.env())
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("hhhh", ROWS, COLS, 0, 0))
        self.client = Terminal(master, "?")
        self.spawn.victims.append(Victim(pid, self.client, children=[pid]))
        self.spawn.terminals.append(self.client)
        wait_for(lambda: self.tmux("list-clients").strip(), what="the client to attach")
        return self.client

    def open_menu(self) -> str:
        """prefix + A typed into the client; the menu as drawn (raw bytes, decoded)."""
        assert self.client is not None
        self.client.write(b"\x02A")
        self.client.expect("adopt which process?")
        return self.client.expect("\u2518")  # the menu's bottom right corner: all of it is drawn

    def messages(self) -> str:
        return self.tmux("show-messages")

    def panes_in_mode(self) -> list[str]:
        return [line for line in self.tmux("list-panes", "-a", "-F", "#{pane_id} #{pane_mode}").splitlines()
                if line.split()[1:]]

    def _become_user(self) -> None:
        try:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)
            os.chdir(self.home)
        except BaseException:
            os._exit(127)


@contextlib.contextmanager
def a_seat(spawn: Spawner) -> Iterator[Seat]:
    """A fresh user with a tmux server (the plugin bound) of their own; all gone afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to give the menu a user of its own")
    name = f"rts{secrets.token_hex(5)}"
    home = Path(tempfile.mkdtemp(prefix=f"reptyr-{name}-", dir="/tmp"))
    created = False
    try:
        _account(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/sh", name])
        created = True
        import pwd

        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        home.chmod(0o700)
        seat = Seat(name, entry.pw_uid, entry.pw_gid, home, spawn)
        check = seat.cli("--version")
        if check.returncode != 0:
            pytest.fail(f"user {name} cannot run this checkout with {SYSTEM_PYTHON}: keep it where others "
                        f"may read it; {check.stderr.strip()}")
        seat.tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", str(COLS), "-y", str(ROWS))
        plugin = seat.cli("plugin-init", "-L", seat.socket)  # what reptyr.tmux ends with
        assert plugin.returncode == 0, plugin.stderr
        try:
            yield seat
        finally:
            seat.run(["tmux", "-L", seat.socket, "kill-server"])
            _kill_everything_of(entry.pw_uid)
    finally:
        if created:
            _account(["userdel", name], check=False)
            _account(["groupdel", name], check=False)
        shutil.rmtree(home, ignore_errors=True)


def _account(argv: list[str], check: bool = True) -> None:
    """useradd/userdel, again while another process holds the lock on /etc/passwd."""
    deadline = time.monotonic() + 20
    while True:
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode == 0 or "lock" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv[0]} failed: {result.stderr}")


def _kill_everything_of(uid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _uid_of(int(p)) == uid]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)
    raise AssertionError(f"processes of uid {uid} survived SIGKILL")


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
