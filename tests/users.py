"""A second, unprivileged user for tests that need an attacker or a bystander of another uid.

`another_user()` creates a real account with useradd (a unique name, its home in a fresh directory
under /tmp that everyone may traverse), yields it, and afterwards kills every process running with
its uid and removes the account and the directory, even when the test failed. Needs root.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pty
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's interpreter may sit in a directory others cannot read
MINIMAL_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


@dataclass
class User:
    name: str
    uid: int
    gid: int
    base: Path  # root's, mode 0755: files the user may read and run but not change (setuid programs)
    home: Path  # the user's own, mode 0755

    def env(self, **extra: str) -> dict[str, str]:
        return {**MINIMAL_ENV, "HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, **extra}

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Run argv as this user (its uid, its group, no supplementary groups), in its home."""
        kwargs.setdefault("env", self.env())
        kwargs.setdefault("cwd", str(self.home))
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(argv, user=self.uid, group=self.gid, extra_groups=[],
                                start_new_session=True, **kwargs)

    def run(self, argv: list[str], timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env())
        kwargs.setdefault("cwd", str(self.home))
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[], capture_output=True,
                              text=True, timeout=timeout, **kwargs)

    def on_pty(self, argv: list[str]) -> tuple[int, int]:
        """argv as this user, session leader of a fresh pty (as sshd would start it): (pid, master fd)."""
        pid, master = pty.fork()
        if pid == 0:
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.chdir(self.home)
                os.execve(argv[0], argv, self.env())
            finally:
                os._exit(127)
        return pid, master

    def own(self, path: Path, mode: int) -> Path:
        """Hand `path` over to this user with `mode`."""
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)
        return path

    def mkdir(self, path: Path, mode: int = 0o755) -> Path:
        """A new directory of this user's."""
        path.mkdir()
        return self.own(path, mode)

    def processes(self) -> list[int]:
        """Every live process with this uid as its real, effective, saved or filesystem uid."""
        return [pid for pid in _all_pids() if self.uid in _uids(pid)]

    def kill_all(self, timeout: float = 10.0) -> None:
        """SIGKILL everything running as this user (again and again: a process may fork meanwhile)
        and reap those that are our children, until none is left."""
        deadline = time.monotonic() + timeout
        while (pids := self.processes()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            time.sleep(0.01)
        left = self.processes()
        assert not left, f"processes of {self.name} survived SIGKILL: {left}"


@contextlib.contextmanager
def another_user(prefix: str = "rtt") -> Iterator[User]:
    """A fresh unprivileged user; everything of it is gone afterwards."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd to create a second user")
    name = f"{prefix}{secrets.token_hex(5)}"  # unique, short (32 at most), lowercase, starts with a letter
    base = Path(tempfile.mkdtemp(prefix=f"reptyr-{name}-", dir="/tmp"))
    created = False
    try:
        base.chmod(0o755)
        home = base / "home"
        subprocess.run(["useradd", "-M", "-U", "-d", str(home), "-s", "/bin/sh", name],
                       check=True, capture_output=True)
        created = True
        entry = _passwd(name)
        home.mkdir()
        user = User(name, entry[0], entry[1], base, home)
        user.own(home, 0o755)
        try:
            yield user
        finally:
            user.kill_all()
    finally:
        if created:
            subprocess.run(["userdel", name], capture_output=True)
            with contextlib.suppress(KeyError):
                grp.getgrnam(name)
                subprocess.run(["groupdel", name], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def _passwd(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _uids(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return tuple(int(field) for field in line.split()[1:])
    except OSError:
        pass
    return ()
