"""The product's main scenario, for real: an ordinary user logged in over a real OpenSSH server.

A plain module (fixtures registered in conftest.py); every helper cleans up after itself, also when the
test fails. Needs root, /usr/sbin/sshd, ssh, useradd (`bash setup.sh test` installs them).

- `ordinary_user` (fixture): a fresh unprivileged account from tests/users.py, `User(name, uid, gid,
  home)`, login shell /bin/bash, no password; afterwards all its processes are killed and the account
  removed.
- `user_install` (fixture): argv prefix running `python -m reptyr_tmux` from a root-owned, world-readable
  copy of the product, with the system Python: any user can run it wherever the checkout lives.
- `sshd` (fixture): `Sshd`, a real sshd on 127.0.0.1 with its own config, host key and port;
  `sshd.login(user, shell="bash"|"zsh"|"fish"|"dash", env={...})` gives an `SshLogin`: the ssh client
  on a pty we own, the remote shell waiting at the prompt `PROMPT`.
- `as_user(user, argv)`, `user_tmux(user)`: run things as the user; `attached_client(tmux)`: a real tmux
  client attached in a pty, for keys typed the way a person types them.
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ptrace
import pytest
from conftest import Terminal, Tmux, wait_for
from users import (  # noqa: F401  (the account helpers live there; these names are used from here too)
    USER_PATH,
    User,
    as_user,
    kill_user_processes,
    need_root_and,
    new_user,
    user_env,
    user_kwargs,
    user_pids,
)

import reptyr_tmux
from reptyr_tmux import proc

SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's may live under /root (0700) or be a pyenv shim
SSHD = "/usr/sbin/sshd"
PROMPT = "rtu$ "  # every login's shell prompt; no shell expands anything in it
SIZE = (100, 30)  # columns, rows of every pty made here
TERM = "xterm-256color"


class UserTmux(Tmux):
    """conftest's Tmux, every command run as `user` (the server is the user's: /tmp/tmux-UID/SOCKET)."""

    def __init__(self, user: User, socket: str):
        super().__init__(socket)
        self.user = user

    def __call__(self, *args: str) -> str:
        return as_user(self.user, [*self.argv, *args], check=True).stdout


@contextlib.contextmanager
def user_tmux(user: User, socket: str | None = None, command: tuple[str, ...] = ()) -> Iterator[UserTmux]:
    """A tmux server of the user on a private socket with session "main" (100x30) running `command`
    (default: the user's shell); killed afterwards."""
    server = UserTmux(user, socket or f"rtu-{os.getpid()}-{time.monotonic_ns()}")
    try:
        server("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", str(SIZE[0]), "-y", str(SIZE[1]),
               *command)
        yield server
    finally:
        as_user(user, [*server.argv, "kill-server"])


# ---- a copy of the product any user can run ----------------------------------------------------------

@contextlib.contextmanager
def installed_for_users() -> Iterator[list[str]]:
    """reptyr_tmux and python-ptrace (pure Python) copied into a fresh root-owned 0755 directory;
    yields argv that runs `python -m reptyr_tmux` from there with the system Python."""
    wanted = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(*sys.version_info[:2])"],
                            capture_output=True, text=True, check=True).stdout.split()
    if tuple(map(int, wanted)) != sys.version_info[:2]:
        raise RuntimeError(f"{SYSTEM_PYTHON} is Python {'.'.join(wanted)} but the tests run "
                           f"{sys.version_info[0]}.{sys.version_info[1]}: make the venv with {SYSTEM_PYTHON}")
    root = Path(tempfile.mkdtemp(prefix="rtu-install-"))
    try:
        for package in (reptyr_tmux, ptrace):
            source = Path(package.__file__).resolve().parent
            shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([SYSTEM_PYTHON, "-m", "compileall", "-q", str(root)], check=True)
        for path in [root, *root.rglob("*")]:  # a checkout made with umask 077 must not hide files
            path.chmod(0o755 if path.is_dir() else 0o644)
        # -I: no PYTHON* variables, no user site, no current directory on sys.path (the user's cwd).
        code = (f"import sys; sys.path.insert(0, {str(root)!r}); import runpy; sys.argv[0] = 'reptyr_tmux'; "
                "runpy.run_module('reptyr_tmux', run_name='__main__', alter_sys=True)")
        yield [SYSTEM_PYTHON, "-I", "-S", "-c", code]
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- processes on a fresh pty ------------------------------------------------------------------------

def spawn_on_pty(argv: list[str], env: dict[str, str], user: User | None = None,
                 size: tuple[int, int] = SIZE) -> tuple[int, int, str]:
    """argv as the session leader of a fresh pty of `size` (columns, rows), as `user` if given;
    returns (pid, master fd, slave path). The slave is handed to the user as login programs do: a tmux server
    of that user opens the client's terminal by name."""
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        if user is not None:
            os.fchown(slave, user.uid, _tty_group())
            os.fchmod(slave, 0o620)
        pid = os.fork()
        if pid == 0:
            _become_session_on(slave, argv, env, user)
    except BaseException:
        os.close(master)
        raise
    finally:
        slave_path = os.ttyname(slave)
        os.close(slave)
    return pid, master, slave_path


def _become_session_on(slave: int, argv: list[str], env: dict[str, str], user: User | None) -> None:
    try:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        if user is not None:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
            os.chdir(user.home)
        os.execvpe(argv[0], argv, env)
    except BaseException as e:
        os.write(2, f"cannot run {argv[0]}: {e}\r\n".encode())
    finally:
        os._exit(127)


def _canonical(tty_path: str) -> bool:
    fd = os.open(tty_path, os.O_RDWR | os.O_NOCTTY)
    try:
        return bool(termios.tcgetattr(fd)[3] & termios.ICANON)
    finally:
        os.close(fd)


def _tty_group() -> int:
    try:
        return grp.getgrnam("tty").gr_gid
    except KeyError:
        return -1


class ChildTerminal(Terminal):
    """conftest's Terminal whose other side runs a child of ours; close() kills and reaps it."""

    def __init__(self, pid: int, master: int, slave_path: str):
        super().__init__(master, slave_path)
        self.pid = pid

    def alive(self) -> bool:
        """Still running (reaps it once it has exited)."""
        try:
            reaped = self.pid > 0 and os.waitpid(self.pid, os.WNOHANG)[0] == self.pid
        except ChildProcessError:  # reaped elsewhere (kill_user_processes reaps what it kills)
            reaped = True
        if reaped:
            self.pid = -1  # the number may be reused from now on
        return self.pid > 0

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for the child to exit by itself."""
        wait_for(lambda: not self.alive(), timeout, "the child on the pty to exit")

    def kill(self) -> None:
        """SIGKILL the child and reap it."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            self.pid = -1

    def close(self) -> None:
        self.kill()
        super().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def attached_client(tmux: Tmux, target: str = "main", term: str = TERM, user: User | None = None,
                    size: tuple[int, int] = SIZE) -> ChildTerminal:
    """A real tmux client attached to `target` of `tmux` in a fresh pty of `size` (columns, rows), run
    as `user` (default: the UserTmux's user, or root for a conftest Tmux); write keys to it
    (b"\\x02A" is prefix + A) and expect() the bytes it draws (conftest.Client renders them).
    close() (or `with`) kills it."""
    user = user or getattr(tmux, "user", None)
    env = user_env(user) if user else {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
    env["TERM"] = term
    client = ChildTerminal(*spawn_on_pty([*tmux.argv, "attach", "-t", target], env, user, size))
    try:
        wait_for(lambda: tmux("list-clients", "-t", target).strip(), what="the tmux client to attach")
        # Keys typed before the server makes the terminal raw would wait in the line discipline for a
        # newline that never comes.
        wait_for(lambda: not _canonical(client.slave_path), what="the client's terminal to be raw")
    except BaseException:
        client.close()
        raise
    return client


# ---- a real sshd and logins through it ---------------------------------------------------------------

SHELLS = {  # argv and environment that give each shell the prompt PROMPT, no rc files, no history file
    "bash": (["bash", "--noprofile", "--norc", "-i"], {"PS1": PROMPT, "HISTFILE": "/dev/null"}),
    "dash": (["dash", "-i"], {"PS1": PROMPT}),
    "zsh": (["zsh", "-f", "-i"], {"PS1": PROMPT}),  # -f: no rc files; zsh takes PS1 from the environment
    "fish": (["fish", "--no-config", "--private", "-i", "-C",
              f"function fish_prompt; printf '%s' {shlex.quote(PROMPT)}; end"], {}),
}


class SshLogin(ChildTerminal):
    """An ssh client (our child, on a pty we own: `pid`, expect(), write()) logged in over the real
    sshd. The remote shell (`shell_pid`) leads its session on `pts` and waits at PROMPT. `sshd_pids`:
    that connection's sshd processes, nearest the shell first (`sshd: USER@pts/N`, then the root
    monitor `sshd: USER [priv]`)."""

    def __init__(self, pid: int, master: int, slave_path: str, user: str):
        super().__init__(pid, master, slave_path)
        self.user = user
        self.shell_pid = 0
        self.pts = ""
        self.sshd_pids: list[int] = []
        self._shell_start = 0
        self._sshd_stats: list[proc.Stat] = []

    def run(self, line: str) -> None:
        """Type `line` and Enter."""
        self.write(line.encode() + b"\r")

    def expect_prompt(self, timeout: float = 10.0) -> str:
        """Wait for the next prompt; return what came before it (the echoed line, then the output)."""
        return self.expect(PROMPT, timeout)

    def session(self) -> list[int]:
        """Live processes of the remote shell's session, the shell (if alive) first."""
        members = [s.pid for s in proc.all_stats()
                   if s.sid == self.shell_pid and s.state not in "ZX" and s.starttime >= self._shell_start]
        return sorted(members, key=lambda pid: pid != self.shell_pid)

    def drop(self) -> None:
        """The connection drops: SIGKILL the ssh client (its kernel closes the TCP connection, so
        sshd reads end-of-file at once)."""
        self.kill()

    def close(self) -> None:
        """SIGKILL the remote session (again while members remain: one may fork meanwhile) and the
        client; wait for the session and this connection's sshd to end."""
        if self.shell_pid:
            wait_for(self._kill_session, what=f"the session of {self.shell_pid} to end")
        super().close()
        _end_processes(self._sshd_stats)

    def _kill_session(self) -> bool:
        members = self.session()
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not members

    def _learn_remote(self, listener: int) -> None:
        self.shell_pid = int(self.expect("\r\n").strip())
        stat = proc.read_stat(self.shell_pid)
        self._shell_start = stat.starttime
        assert stat.sid == self.shell_pid, f"the remote shell {self.shell_pid} does not lead its session"
        self.pts = os.readlink(f"/proc/{self.shell_pid}/fd/0")
        while (stat := proc.read_stat(stat.ppid)).pid != listener and stat.ppid > 1:
            self._sshd_stats.append(stat)
        self.sshd_pids = [s.pid for s in self._sshd_stats]


@dataclass
class Sshd:
    """A real sshd (-D -e) on 127.0.0.1:`port`; its files in `workdir` (root-owned, 0755, under /run:
    StrictModes wants every directory above the keys unwritable by others, which /tmp is not)."""

    workdir: Path
    port: int = 0
    process: subprocess.Popen | None = None
    logins: list[SshLogin] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    def authorize(self, name: str) -> None:
        """Let `name` log in with the client key."""
        keys = self.workdir / "keys" / name
        keys.write_text((self.workdir / "client_key.pub").read_text())
        keys.chmod(0o644)

    def log(self) -> str:
        return (self.workdir / "sshd.log").read_text(errors="replace")

    def login(self, user: User | str, shell: str | None = None, env: dict[str, str] | None = None,
              timeout: float = 30.0) -> SshLogin:
        """Log `user` in with ssh -tt, running `shell` (bash, zsh, fish or dash; bash by default) as the
        session's leader with extra `env`; returns once its prompt is there."""
        name = user if isinstance(user, str) else user.name
        argv, shell_env = SHELLS[shell or "bash"]
        shell_env = {**shell_env, **self._scratch_env(name, shell), **(env or {})}
        # The login shell (POSIX) prints its pid, then execs the wanted shell: the pid stays the leader's.
        remote = f"echo RTU-SHELL $$; exec env {shlex.join(f'{k}={v}' for k, v in shell_env.items())} " \
                 f"{shlex.join(argv)}"
        local_env = {"TERM": TERM, "PATH": os.environ.get("PATH", USER_PATH), "HOME": "/nonexistent"}
        login = SshLogin(*spawn_on_pty([*self.ssh_argv(name), remote], local_env), user=name)
        self.logins.append(login)
        try:
            login.expect("RTU-SHELL ", timeout)
            login._learn_remote(self.process.pid)
            login.expect_prompt(timeout)
        except BaseException as e:
            login.close()
            raise AssertionError(f"ssh login of {name} failed: {e}\nsshd said:\n{self.log()[-3000:]}") from e
        return login

    def ssh_argv(self, name: str) -> list[str]:
        """ssh with our key and nothing from anyone's ssh config, agent or known_hosts."""
        options = {"StrictHostKeyChecking": "no", "UserKnownHostsFile": "/dev/null",
                   "GlobalKnownHostsFile": "/dev/null", "BatchMode": "yes", "IdentitiesOnly": "yes",
                   "IdentityAgent": "none", "ControlPath": "none", "LogLevel": "ERROR",
                   "ConnectTimeout": "20"}
        return ["ssh", "-F", "/dev/null", "-tt", "-i", str(self.client_key), "-p", str(self.port),
                *(f"-o{k}={v}" for k, v in options.items()), "-l", name, "127.0.0.1"]

    def _scratch_env(self, name: str, shell: str | None) -> dict[str, str]:
        """fish makes config, data and runtime directories at start: root's go here, not into /root
        and /tmp (an ordinary user's are removed with the user)."""
        if shell != "fish" or name != "root":
            return {}
        return {f"XDG_{kind}": str(self.workdir / "fish-root" / kind) for kind in
                ("CONFIG_HOME", "DATA_HOME", "RUNTIME_DIR")}

    def start(self, attempts: int = 5) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation; shared, left in place
        for path in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rtu-test", "-f",
                            str(self.workdir / path)], check=True)
        (self.workdir / "keys").mkdir(mode=0o755)
        for _ in range(attempts):  # a free port may be taken by someone else before sshd binds it
            self.port = _free_port()
            config = self.workdir / "sshd_config"
            config.write_text(self._config())
            log = (self.workdir / "sshd.log").open("w")
            self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
            log.close()
            wait_for(self._listening_or_gone, 20, "sshd to listen")
            if self.process.poll() is None:
                return
        raise RuntimeError(f"sshd did not start:\n{self.log()}")

    def _listening_or_gone(self) -> bool:
        listening = f"Server listening on 127.0.0.1 port {self.port}"
        return listening in self.log() or self.process.poll() is not None

    def _config(self) -> str:
        d = self.workdir
        return f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/keys/%u
AllowUsers root rtu*
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
MaxStartups 64
MaxSessions 64
LogLevel INFO
# bash runs ~/.bashrc for a command sshd starts unless it looks nested (SHLVL): the login shell must not
# run root's rc files (a pyenv there waits a minute on a stale lock) before it execs the wanted shell.
SetEnv SHLVL=1
"""

    def stop(self) -> None:
        for login in self.logins:
            login.close()
        if self.process is None:
            return
        # Connection handlers setsid() away from the listener: find them while they are its children.
        stats = proc.all_stats()
        handlers = [s for s in stats if _descends_from(s, self.process.pid, stats)]
        self.process.kill()
        self.process.wait()
        _end_processes(handlers, timeout=0)


@contextlib.contextmanager
def running_sshd(*users: str) -> Iterator[Sshd]:
    """A fresh sshd that lets root and `users` log in with its client key; stopped afterwards."""
    server = Sshd(Path(tempfile.mkdtemp(prefix="rtu-sshd-", dir="/run")))
    try:
        server.workdir.chmod(0o755)
        server.start()
        for name in ("root", *users):
            server.authorize(name)
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exists(pid: int) -> bool:
    try:
        return proc.read_stat(pid).state not in "ZX"
    except OSError:
        return False


def _descends_from(stat: proc.Stat, ancestor: int, stats: list[proc.Stat]) -> bool:
    parents = {s.pid: s.ppid for s in stats}
    pid = stat.ppid
    while pid > 1:
        if pid == ancestor:
            return True
        pid = parents.get(pid, 0)
    return False


def _end_processes(stats: list[proc.Stat], timeout: float = 5.0) -> None:
    """Wait up to `timeout` for these processes to end by themselves, then SIGKILL the rest (checked by
    start time: a pid may have been reused)."""
    def left() -> list[int]:
        return [s.pid for s in stats if _exists(s.pid) and proc.read_stat(s.pid).starttime == s.starttime]

    with contextlib.suppress(AssertionError):
        wait_for(lambda: not left(), timeout, "sshd processes to end")
    for pid in left():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---- fixtures (registered by conftest.py) --------------------------------------------------------------

@pytest.fixture(scope="session")
def ordinary_user() -> Iterator[User]:
    need_root_and("useradd", "userdel")
    with new_user() as user:
        yield user


@pytest.fixture(scope="session")
def user_install() -> Iterator[list[str]]:
    need_root_and(SYSTEM_PYTHON)
    with installed_for_users() as argv:
        yield argv


@pytest.fixture(scope="session")
def sshd(ordinary_user: User) -> Iterator[Sshd]:
    need_root_and(SSHD, "ssh", "ssh-keygen")
    with running_sshd(ordinary_user.name) as server:
        yield server
