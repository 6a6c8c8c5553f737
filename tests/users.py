"""A second, unprivileged user for tests that need an attacker, a bystander or an ordinary user.

- `new_user()`: a fresh account (useradd; a unique name; its home in a new directory of root's that
  everyone may traverse; /bin/bash; no password, so sshd takes keys only), yielded as
  `User(name, uid, gid, home)`; afterwards every process with its uid is killed and the account,
  its home and its leftovers in /tmp, /var/tmp and /dev/shm are removed, also when the test failed.
- `as_user(user, argv)` / `user_popen(user, argv)`: run argv as the user (uid, its group, no other
  groups) with a login's environment, in its home; `user_kwargs(user)`: the same for subprocess calls.
- `give(user, path, mode)`: hand a file or directory over to the user.
- `kill_user_processes(user)`, `user_pids(uid)`; `need_root_and(*programs)`: skip (in CI: fail) unless
  we are root and have them.
Needs root and useradd/userdel (`bash setup.sh test` installs them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
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

from reptyr_tmux import proc

# A login's PATH, with the tmux these tests run first (CI puts other releases first on PATH): a server
# started by the user must be the release under test, and a client of another release cannot talk to it.
USER_PATH = ":".join(dict.fromkeys([os.path.dirname(shutil.which("tmux") or "/usr/bin"),
                                    "/usr/local/bin", "/usr/bin", "/bin"]))


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path
    shell: str = "/bin/bash"

    @classmethod
    def named(cls, name: str) -> User:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), entry.pw_shell)


def need_root_and(*programs: str) -> None:
    """Skip the test unless we are root and have these programs (fail instead in CI)."""
    missing = [p for p in programs if shutil.which(p) is None and not os.path.exists(p)]
    if os.geteuid() == 0 and not missing:
        return
    reason = f"needs root and {', '.join(programs)} (bash setup.sh test installs them)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def new_user(prefix: str = "rtu") -> Iterator[User]:
    """A fresh account: unique name, home in a new directory, /bin/bash, no password (sshd keys only)."""
    base = Path(tempfile.mkdtemp(prefix=f"{prefix}-home-"))
    name = None
    try:
        base.chmod(0o755)  # mkdtemp makes it 0700: the user must reach its home inside
        name = _add_account(prefix, base)
        user = User.named(name)
        user.home.mkdir(mode=0o700)  # no /etc/skel: no .bashrc that could change prompts or PATH
        os.chown(user.home, user.uid, user.gid)
        yield user
    finally:
        if name is not None:
            _remove_account(User.named(name))
        shutil.rmtree(base, ignore_errors=True)


def _add_account(prefix: str, base: Path) -> str:
    for _ in range(20):
        name = f"{prefix}{secrets.token_hex(3)}"
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            continue
        # '*' matches no password but is not "locked" ('!'): sshd without PAM refuses locked accounts.
        _account_tool(["useradd", "--no-create-home", "--user-group", "--uid", str(_unused_uid()),
                       "--home-dir", str(base / name), "--shell", "/bin/bash", "--password", "*", name])
        return name
    raise RuntimeError("found no free user name")


def _unused_uid() -> int:
    """A uid no account has and no process runs as: useradd would hand the next test the uid of the
    account just removed, and anything of the old one still ending would then count as the new one's."""
    running = {int(part) for pid in proc.all_pids() for part in _uids_of(pid)}
    for _ in range(100):
        uid = 30000 + secrets.randbelow(29000)
        with contextlib.suppress(KeyError):
            pwd.getpwuid(uid)
            continue
        if uid not in running:
            return uid
    raise RuntimeError("found no free uid")


def _uids_of(pid: int) -> list[str]:
    try:
        return proc.read_status(pid)["Uid"].split()
    except (OSError, KeyError):
        return []


def _remove_account(user: User) -> None:
    kill_user_processes(user)
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):  # its leftovers there (tmux-UID, ...), by owner
        with contextlib.suppress(OSError), os.scandir(scratch) as entries:
            for entry in entries:
                if entry.stat(follow_symlinks=False).st_uid == user.uid:
                    _remove_path(Path(entry.path))
    _account_tool(["userdel", "--force", "--remove", user.name], ok_codes=(0, 12))  # 12: no home left


def _account_tool(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> None:
    """useradd/userdel, retried while another process holds the lock on /etc/passwd (helpers run
    side by side)."""
    for _ in range(50):
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode in ok_codes:
            return
        if "lock" not in result.stderr:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def user_pids(uid: int) -> list[int]:
    """Live processes with `uid` as real, effective, saved or filesystem uid (zombies count as gone)."""
    found = []
    for pid in proc.all_pids():
        with contextlib.suppress(OSError, KeyError, ValueError):
            status = proc.read_status(pid)
            if status.get("State", "Z").startswith(("Z", "X")):
                continue
            if uid in {int(part) for part in status["Uid"].split()}:
                found.append(pid)
    return found


def kill_user_processes(user: User, timeout: float = 10.0) -> None:
    """SIGKILL everything of the user, again while new ones appear (a process may fork meanwhile)."""
    deadline = time.monotonic() + timeout
    while (pids := user_pids(user.uid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # ours (as_user Popen, attached clients): reap
        time.sleep(0.01)
    if pids := user_pids(user.uid):
        raise RuntimeError(f"processes of {user.name} survived SIGKILL: {pids}")


# ---- running things as the user --------------------------------------------------------------------

def user_env(user: User, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A login's environment: nothing of ours (no XDG_RUNTIME_DIR, TMUX_TMPDIR, TMUX, venv PATH)."""
    env = {"HOME": str(user.home), "USER": user.name, "LOGNAME": user.name, "SHELL": user.shell,
           "PATH": USER_PATH, "LANG": "C.UTF-8"}
    env.update({k: v for k, v in os.environ.items() if k.startswith("REPTYR_TMUX_")})  # debug switches
    env.update(extra or {})
    return env


def user_kwargs(user: User, env: dict[str, str] | None = None) -> dict:
    """subprocess.run/Popen arguments that make the child that user: uid, group, no other groups."""
    return {"user": user.uid, "group": user.gid, "extra_groups": [], "env": user_env(user, env),
            "cwd": str(user.home)}


def as_user(user: User, argv: list[str], env: dict[str, str] | None = None,
            **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run as the user; by default stdin /dev/null, output captured as text, 60 s timeout."""
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 60)
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, **user_kwargs(user, env), **kwargs)


def user_popen(user: User, argv: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    """subprocess.Popen as the user, in a session of its own; by default stdin /dev/null."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(argv, start_new_session=True, **user_kwargs(user, env), **kwargs)


def give(user: User, path: Path, mode: int) -> Path:
    """Hand `path` over to the user (owner and group), with `mode`."""
    os.chown(path, user.uid, user.gid)
    os.chmod(path, mode)
    return path
