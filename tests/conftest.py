"""Real ptys, real processes: victims run on a terminal the test owns (a stand-in for an ssh session)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reptyr_tmux import proc

VICTIMS = Path(__file__).parent / "victims"
os.environ["REPTYR_TMUX_DEBUG"] = "1"  # our CLI shows full tracebacks to the tests
ECHO = [sys.executable, str(VICTIMS / "echo.py")]
CLI = [sys.executable, "-m", "reptyr_tmux"]


class Terminal:
    """The master side of a pty, with a little expect()."""

    def __init__(self, master: int, slave_path: str):
        # pty.fork's master is inheritable: every later child (a relay, a tmux server) would keep the
        # terminal open, and closing it would then hang nobody up.
        if master >= 0:
            os.set_inheritable(master, False)
        self.master = master
        self.slave_path = slave_path
        self.seen = b""
        self.drawn = b""  # everything ever read, for rendering the screen as a whole (menu_key)

    @classmethod
    def open(cls) -> tuple[Terminal, int]:
        master, slave = os.openpty()
        return cls(master, os.ttyname(slave)), slave

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Wait until `text` has appeared since the last expect(); return what came up to it."""
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                raise AssertionError(f"{text!r} never appeared; got {self.seen!r}")
        before, _, self.seen = self.seen.partition(wanted)
        return before.decode(errors="replace")

    def quiet_for(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)
        data, self.seen = self.seen, b""
        return data

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        self.seen += data
        self.drawn += data
        return bool(data)

    def close(self) -> None:
        if self.master >= 0:
            os.close(self.master)
            self.master = -1


@dataclass
class Victim:
    pid: int
    term: Terminal
    shell_pid: int | None = None
    children: list[int] = field(default_factory=list)

    def stat(self) -> proc.Stat:
        return proc.read_stat(self.pid)

    def alive(self) -> bool:
        try:
            return self.stat().state not in ("Z", "X")
        except OSError:
            return False

    def fd_targets(self) -> dict[int, str]:
        return {fd: proc.fd_target(self.pid, fd) for fd in proc.open_fds(self.pid)}


def gone(pid: int) -> bool:
    """Exited (a zombie or reaped)."""
    try:
        return proc.read_stat(pid).state in ("Z", "X")
    except OSError:
        return True


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


READ_SYSCALL = {"x86_64": 0, "aarch64": 63}


def blocked_reading_fd(pid: int, fd: int) -> bool:
    """Whether `pid` sits in read(fd, ...) (/proc/PID/syscall: number, then the arguments)."""
    try:
        with open(f"/proc/{pid}/syscall") as f:
            fields = f.read().split()
    except OSError:
        return False
    wanted = READ_SYSCALL.get(os.uname().machine)
    return len(fields) > 2 and fields[0] == str(wanted) and int(fields[1], 16) == fd


class Spawner:
    def __init__(self) -> None:
        self.victims: list[Victim] = []
        self.terminals: list[Terminal] = []
        self.pipes: list = []

    def on_pty(self, argv: list[str], ready: str = "ready") -> Victim:
        """The victim is the session leader of a fresh pty (like a program run directly by sshd)."""
        pid, master = pty.fork()
        if pid == 0:
            os.execvp(argv[0], argv)
        term = Terminal(master, "?")
        victim = Victim(pid, term, children=[pid])
        self._track(victim)
        term.expect(ready)
        return victim

    def in_shell(self, command: str, ready: str = "ready") -> Victim:
        """The victim is a foreground job of an interactive bash on a fresh pty."""
        pid, master = pty.fork()
        if pid == 0:
            env = dict(os.environ, PS1="$ ", TERM="dumb", HISTFILE="/dev/null")
            os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
        term = Terminal(master, "?")
        term.expect("$ ")
        term.write(command.encode() + b"\n")
        term.expect(ready)
        child = wait_for(lambda: _child_of(pid), what="the job to start")
        victim = Victim(child, term, shell_pid=pid, children=[pid])
        self._track(victim)
        return victim

    def detached(self, argv: list[str]) -> Victim:
        """The victim has no terminal at all: stdin is an idle pipe, stdout/stderr /dev/null."""
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        victim = Victim(child.pid, Terminal(-1, "?"), children=[child.pid])
        self.pipes.append(child.stdin)
        self._track(victim)
        # Started means blocked reading its stdin: a slow machine (arm64 under emulation) takes seconds
        # to start a Python, and a snapshot taken before would see it still changing.
        wait_for(lambda: blocked_reading_fd(child.pid, 0), timeout=60, what="the victim to read its stdin")
        return victim

    def new_terminal(self) -> tuple[Terminal, int]:
        term, slave = Terminal.open()
        self.terminals.append(term)
        return term, slave

    def _track(self, victim: Victim) -> None:
        self.victims.append(victim)
        self.terminals.append(victim.term)

    def cleanup(self) -> None:
        for victim in self.victims:
            for pid in [victim.pid, *victim.children]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in victim.children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        for term in self.terminals:
            term.close()
        for pipe in self.pipes:
            pipe.close()


def _child_of(parent: int) -> int | None:
    for stat in proc.all_stats():
        if stat.ppid == parent and stat.state != "Z":
            return stat.pid
    return None


@pytest.fixture
def spawn():
    spawner = Spawner()
    yield spawner
    spawner.cleanup()


class Shell:
    """An interactive bash on a pty of its own (like an ssh session), with jobs started in it."""

    def __init__(self, term: Terminal, pid: int):
        self.term, self.pid = term, pid

    def run(self, line: str, ready: str = "$ ") -> str:
        self.term.write(line.encode() + b"\n")
        return self.term.expect(ready)

    def members(self) -> list[int]:
        return sorted(s.pid for s in proc.all_stats() if s.sid == self.pid and s.state != "Z")


@pytest.fixture
def shell(spawn):
    """An interactive bash on a fresh pty, as an ssh session's shell; every process of its session
    is killed afterwards."""
    pid, master = pty.fork()
    if pid == 0:
        env = dict(os.environ, PS1="$ ", TERM="xterm-256color", HISTFILE="/dev/null")
        os.execvpe("bash", ["bash", "--norc", "--noprofile", "-i"], env)
    term = Terminal(master, "?")
    spawn.terminals.append(term)
    term.expect("$ ")
    sh = Shell(term, pid)
    yield sh
    for member in sh.members():
        with contextlib.suppress(ProcessLookupError):  # (one may end between the listing and the kill)
            os.kill(member, signal.SIGKILL)
    os.waitpid(pid, 0)


class Client:
    """A real tmux client attached to `server` in a pty of ours: keys go into the pty as a person types
    them; what the client draws is rendered by a terminal emulator (pyte), menus included."""

    def __init__(self, server: Tmux, user: str | None = None, rows: int = 30, cols: int = 100,
                 target: str = "main"):
        """As `user` (a name) if given, else as the server's user (realssh.UserTmux) or root."""
        import pyte
        from realssh import User, attached_client  # realssh imports this module: import it when used

        self.term = attached_client(server, target, user=User.named(user) if user else None,
                                    size=(cols, rows))
        self.pid = self.term.pid
        self._screen = emulator(cols, rows)
        self._stream = pyte.ByteStream(self._screen)

    def type(self, keys: bytes) -> None:
        self.term.write(keys)

    def wait(self, text: str, timeout: float = 10) -> str:
        return wait_for(lambda: text in self.text() and self.text(), timeout, repr(text))

    def text(self) -> str:
        """The client's screen as a person sees it now."""
        while self.term._read(0.02):
            pass
        self._stream.feed(self.term.seen)
        self.term.seen = b""
        return "\n".join(self._screen.display)

    def menu_key(self, pid: int) -> str:
        return menu_key_on(self.text(), pid)

    def close(self) -> None:
        self.term.close()  # kills and reaps the client


def menu_key_on(screen: str, pid: int) -> str:
    """The key of the menu item that names `pid`, read off the menu as drawn on `screen`: taken from
    the menu itself, it cannot be shifted by a process that came or went since some earlier list."""
    line = next(line for line in screen.splitlines() if f" {pid} " in line)
    return line[line.rindex("(") + 1 : line.rindex(")")]


def emulator(cols: int, rows: int):
    """A pyte screen that also takes tmux 3.7's private device-status query (ESC [ ? n), on which
    pyte 0.8 raises; it is a question to the terminal, nothing drawn."""
    import pyte

    class Screen(pyte.Screen):
        def report_device_status(self, *args, **kwargs) -> None:
            kwargs.pop("private", None)
            super().report_device_status(*args, **kwargs)

    return Screen(cols, rows)


def rendered(drawn: bytes, size: tuple[int, int]) -> str:
    """What a terminal of `size` (columns, rows) shows after all of `drawn`."""
    import pyte

    screen = emulator(*size)
    pyte.ByteStream(screen).feed(drawn)
    return "\n".join(screen.display)


def build_c(tmp_path_factory, source: str, *flags: str) -> str:
    """Compile a victim from tests/victims; fail in CI when the compiler is missing, skip elsewhere."""
    out = tmp_path_factory.mktemp("bin") / source.replace(".c", "")
    cc = shutil.which("gcc") or shutil.which("cc")
    result = subprocess.run([cc or "gcc", *flags, "-O1", "-o", str(out), str(VICTIMS / source)],
                            capture_output=True, text=True) if cc else None
    if result is None or result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot build {source}: {result.stderr if result else 'no gcc'}")
        pytest.skip(f"cannot build {source} (apt-get install gcc gcc-multilib)")
    return str(out)


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A temporary directory that no one but us and root can change anywhere on its path (under
    ~/.cache): where a program tmux runs may be kept. A tmp_path, under sticky, world-writable /tmp,
    does not qualify."""
    from reptyr_tmux.trust import private_directory

    base = private_directory(os.path.join(os.path.expanduser("~"), ".cache", "reptyr-tmux-tests"))
    assert base is not None, "~/.cache is writable by others: no private place for the tests"
    path = Path(tempfile.mkdtemp(dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(base)  # unless another test still uses it


MACHINE = os.uname().machine
# The register canary is written in each architecture's assembly; the property it checks is the same.
CANARY_SOURCES = {"x86_64": "canary.c", "aarch64": "canary_aarch64.c"}


@pytest.fixture(scope="session")
def echo32(tmp_path_factory) -> str:
    """A 32-bit victim, built with gcc -m32 (CI installs gcc-multilib)."""
    if MACHINE != "x86_64":
        pytest.skip(f"32-bit x86 programs need an x86_64 kernel; this one is {MACHINE}")
    return build_c(tmp_path_factory, "echo32.c", "-m32")


@pytest.fixture(scope="session")
def strict_echo(tmp_path_factory) -> str:
    """A victim under seccomp's strict mode: any syscall but read, write and exit kills it."""
    return build_c(tmp_path_factory, "strict_echo.c")


@pytest.fixture(scope="session")
def canary(tmp_path_factory) -> str:
    """A victim that checks, after its read() returns, every register a syscall must preserve."""
    if MACHINE not in CANARY_SOURCES:
        pytest.skip(f"no register canary written for {MACHINE} yet (see tests/victims/canary*.c)")
    return build_c(tmp_path_factory, CANARY_SOURCES[MACHINE])


@pytest.fixture(scope="session")
def sleeper(tmp_path_factory) -> str:
    """A victim in one relative nanosleep that reports how long it really slept."""
    return build_c(tmp_path_factory, "sleeper.c")


class Tmux:
    made: list[Tmux] = []  # every server a test of this run made, for the safety net below

    def __init__(self, socket: str):
        self.socket = socket
        self.argv = ["tmux", "-L", socket]
        Tmux.made.append(self)
        # Where `tmux -L` puts it; tmux 3.3a leaves the socket behind when its server exits.
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        self.socket_path = os.path.join(tmpdir, f"tmux-{os.getuid()}", socket)

    def kill(self) -> None:
        """End the server (if it still runs) and remove its socket."""
        subprocess.run([*self.argv, "kill-server"], capture_output=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)

    def __call__(self, *args: str) -> str:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, check=True).stdout

    def screen(self, target: str) -> str:
        return self("capture-pane", "-p", "-t", target)

    def wait_screen(self, target: str, text: str, timeout: float = 10) -> str:
        return wait_for(lambda: text in self.screen(target) and self.screen(target), timeout, repr(text))

    def windows(self) -> list[str]:
        return self("list-windows", "-t", "main", "-F", "#{window_index}").split()

    def pane(self, target: str, fmt: str) -> str:
        return self("display-message", "-p", "-t", target, fmt).strip()

    def key_binding(self, key: str, table: str = "prefix") -> str:
        """The binding of `key`, picked from the whole table: `list-keys -T TABLE KEY` takes no key
        before 3.1, and 3.7 sends a single match to the status line rather than stdout (a tmux bug)."""
        for line in self("list-keys", "-T", table).splitlines():
            if f" -T {table} {key} " in " ".join(line.split()) + " ":
                return line
        return ""

    @staticmethod
    def version() -> tuple[int, int]:
        """The (major, minor) of the tmux on PATH, as the product reads it (CI runs other releases)."""
        from reptyr_tmux.mux.tmux import Server

        return Server(socket_name="version").version()


@pytest.fixture(scope="session", autouse=True)
def no_tmux_server_left():
    """A test that forgot to: its tmux server ends, and its socket goes, when the run ends."""
    yield
    for server in Tmux.made:
        if os.path.exists(server.socket_path):  # the rest were killed already
            server.kill()


@pytest.fixture
def tmux():
    server = Tmux(f"reptyr-test-{os.getpid()}-{time.monotonic_ns()}")
    server("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "100", "-y", "30")
    yield server
    server.kill()


from realssh import ordinary_user, sshd, user_install  # noqa: E402, F401  (fixtures: a real sshd and user)
