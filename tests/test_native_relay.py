"""The native (ELF) relay, with real processes: a holder owning a pty master whose slave runs a program,
and the relay as session leader of a second pty that the test holds, as tmux would hold a pane's."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for as wait_until

from reptyr_tmux import proc
from reptyr_tmux.native import native_relay

REPO = Path(__file__).resolve().parent.parent
ECHO = [sys.executable, str(REPO / "tests" / "victims" / "echo.py")]
TIOCSCTTY = 0x540E
native_only = pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"),
                                 reason="the ELF relay is x86_64 and aarch64 only")

# The holder: runs PROGRAM on a pty of its own, says "MASTER_FD PROGRAM_PID", never touches the master,
# closes it when the program has exited, then waits for its stdin to end.
HOLDER = """
import os, pty, sys
nonblocking = sys.argv[1] == "--nonblocking"
program = sys.argv[2:] if nonblocking else sys.argv[1:]
pid, master = pty.fork()
if pid == 0:
    os.execv(program[0], program)
os.set_blocking(master, not nonblocking)  # as sshd or a terminal emulator may have it
print(master, pid, flush=True)
os.waitpid(pid, 0)
os.close(master)
sys.stdin.read()
"""

# A program that, once told to, prints BLAST_MIB MiB in 64 KiB writes, then a marker, then waits for EOF.
BLAST_MIB = 20
BLAST = f"""
import os, sys
sys.stdin.readline()
block = (b"x" * 1023 + b"\\n") * 64
for _ in range({BLAST_MIB} * 16):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
os.write(1, b"BLAST-DONE\\n")
sys.stdin.readline()
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), e.get("PYTHONPATH")]))
    return e


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cpu_ns(pid: int) -> int:
    """Time on a CPU so far, in nanoseconds (schedstat; /proc/PID/stat only counts 10 ms ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Holder:
    """A process holding a pty master, with PROGRAM on its slave."""

    def __init__(self, program: list[str], nonblocking: bool = False):
        flags = ["--nonblocking"] if nonblocking else []
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, *flags, *program], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env())
        assert self.proc.stdout is not None
        fd, program_pid = self.proc.stdout.readline().split()
        self.pid, self.fd, self.program_pid = self.proc.pid, int(fd), int(program_pid)

    def wait_catching_sigwinch(self) -> None:
        """Until the program has its SIGWINCH handler (before, the size the relay sets would go unseen)."""

        def catching() -> bool:
            status = Path(f"/proc/{self.program_pid}/status").read_text()
            caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
            return bool(int(caught.split()[1], 16) & 1 << (signal.SIGWINCH - 1))

        wait_until(catching, 10.0, "the program to catch SIGWINCH")

    def starttime(self) -> int:
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        return int(raw[raw.rindex(")") + 2 :].split()[19])  # field 22

    def close(self) -> None:
        for pid in (self.program_pid, self.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait(10)


class Pane:
    """A fresh pty of the test's own, with ARGV as session leader on its slave (as tmux runs a pane)."""

    def __init__(self, argv: list[str], rows: int = 30, cols: int = 100):
        self.master, self.slave = os.openpty()
        set_size(self.master, rows, cols)
        self.termios_before = termios.tcgetattr(self.slave)
        self.seen = b""
        self.exit_code: int | None = None
        self.pid = os.fork()
        if self.pid == 0:
            try:
                os.close(self.master)
                os.setsid()
                for fd in (0, 1, 2):
                    os.dup2(self.slave, fd)
                os.closerange(3, 65536)  # a pane's first process has only fds 0-2
                fcntl.ioctl(0, TIOCSCTTY, 0)
                os.execve(argv[0], argv, env())
            finally:
                os._exit(127)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read(self, timeout: float) -> bytes:
        if not select.select([self.master], [], [], timeout)[0]:
            return b""
        try:
            return os.read(self.master, 65536)
        except OSError:  # EIO: the relay has gone
            return b""

    def expect(self, text: str, timeout: float = 10.0) -> None:
        wanted = text.encode()
        deadline = time.monotonic() + timeout
        while wanted not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} never appeared; got {self.seen!r}")
            self.seen += self.read(left)
        self.seen = self.seen.partition(wanted)[2]

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.read(left)
        self.seen = b""

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.exit_code is None and time.monotonic() < deadline:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.exit_code = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.01)
        return self.exit_code

    def close(self) -> None:
        if self.wait(0) is None:
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def elf_cache(private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_tmp))
    monkeypatch.delenv(native_relay.FORCE_PYTHON_ENV, raising=False)
    return private_tmp / "reptyr-tmux"


@pytest.fixture
def holder() -> Iterator[Holder]:
    h = Holder(ECHO)
    h.wait_catching_sigwinch()
    yield h
    h.close()


def start_relay(argv: list[str]) -> Pane:
    pane = Pane(argv)
    try:
        wait_until(lambda: comm(pane.pid) == "reptyr-relay" or pane.wait(0) is not None, 10.0,
                   "the relay to be ready")
        assert pane.exit_code is None, f"the relay exited {pane.exit_code}: {pane.read(0.1)!r}"
    except BaseException:
        pane.close()
        raise
    return pane


# A program in raw mode that reads nothing for a while (its terminal's input fills up), then all of it.
SLURP_BYTES = 300_000
SLURP = f"""
import os, time, tty
tty.setraw(0)
os.write(1, b"raw\\r\\n")
time.sleep(1)
total = 0
while total < {SLURP_BYTES}:
    total += len(os.read(0, 65536))
os.write(1, f"total {{total}}\\r\\n".encode())
os.read(0, 1)
"""


def native_argv(holder: Holder) -> list[str]:
    argv = native_relay.relay_argv(holder.pid, holder.fd)
    assert argv is not None
    return argv


def python_argv(holder: Holder) -> list[str]:
    return [sys.executable, "-m", "reptyr_tmux.native.relay", str(holder.pid), str(holder.starttime()),
            str(holder.fd)]


# --- the image ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "e_machine"), [("x86_64", 62), ("aarch64", 183)])
def test_relay_elf_is_one_static_load_segment(machine: str, e_machine: int) -> None:
    image = native_relay.relay_elf(machine)
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1
    assert struct.unpack_from("<HHIQ", image, 16)[:2] == (2, e_machine)
    assert struct.unpack_from("<H", image, 56)[0] == 1
    entry = struct.unpack_from("<Q", image, 24)[0]
    assert entry == 0x400000 + 120 and entry % 4 == 0  # right after the headers (aarch64: aligned)
    assert image.endswith(b"reptyr-relay\0")
    print(f"{machine} relay ELF: {len(image)} bytes")
    assert len(image) < 2048


@native_only
def test_relay_argv_caches_the_elf_privately(elf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = native_relay.relay_argv(1234, 5)
    assert argv is not None and argv[1:] == ["1234", "5"]
    path = Path(argv[0])
    assert path.parent == elf_cache and path.name.startswith("relay-")
    assert path.read_bytes() == native_relay.relay_elf() and path.stat().st_mode & 0o777 == 0o700
    assert native_relay.relay_argv(1, 0) == [argv[0], "1", "0"]
    monkeypatch.setenv(native_relay.FORCE_PYTHON_ENV, "1")
    assert native_relay.relay_argv(1, 0) is None


# --- the relay at work --------------------------------------------------------------------------


@native_only
def test_relays_both_ways_follows_the_size_idles_and_exits_with_the_session(
        elf_cache: Path, holder: Holder) -> None:
    pane = start_relay(native_argv(holder))
    try:
        pid = pane.pid
        pane.expect("ready")  # what the program said before the relay came
        pane.expect("winch 30x100")  # our size reached the program's terminal

        fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        assert sorted(fds) == [0, 1, 2, 3, 4], fds  # the pidfd is closed again
        assert {fds[3], fds[4]} == {"/dev/ptmx", "anon_inode:[signalfd]"}, fds  # the master, the signalfd
        assert not termios.tcgetattr(pane.slave)[3] & termios.ICANON  # raw mode
        pane.write(b"hello relay\r")
        pane.expect("got: hello relay")

        set_size(pane.master, 40, 120)
        pane.expect("winch 40x120")

        pane.write(b"y" * 3000 + b"\r")  # a long line, in one read
        pane.expect("got: " + "y" * 3000)

        kb = proc.resident_kb(pid)
        print(f"native relay Rss: {kb} kB (VmRSS {proc.read_status(pid)['VmRSS']})")
        assert kb < 300

        pane.drain(0.2)
        before = cpu_ns(pid)
        time.sleep(0.5)
        assert cpu_ns(pid) == before, "the relay used CPU while idle"

        pane.write(b"\x04")  # ^D on the program's (cooked) terminal: EOF, it says "eof" and exits
        pane.expect("eof")
        assert pane.wait(10) == 0
        assert termios.tcgetattr(pane.slave) == pane.termios_before
    finally:
        pane.close()


@native_only
def test_survives_stop_and_continue(elf_cache: Path, holder: Holder) -> None:
    pane = start_relay(native_argv(holder))
    try:
        pane.expect("ready")
        os.kill(pane.pid, signal.SIGSTOP)
        os.kill(pane.pid, signal.SIGCONT)  # a stop and continue interrupts nothing
        pane.write(b"still here\r")
        pane.expect("got: still here")
        assert pane.wait(0.2) is None
    finally:
        pane.close()


@native_only
def test_waits_while_a_non_blocking_master_is_full(elf_cache: Path) -> None:
    holder = Holder([sys.executable, "-c", SLURP], nonblocking=True)
    try:
        pane = start_relay(native_argv(holder))
        try:
            pane.expect("raw")
            pane.write(b"z" * SLURP_BYTES)  # the relay's writes to the master say EAGAIN for a while
            pane.expect(f"total {SLURP_BYTES}")
            assert pane.wait(0) is None
        finally:
            pane.close()
    finally:
        holder.close()


@native_only
@pytest.mark.parametrize("args", [[], ["1"], ["1", "2", "3"], ["", "3"], ["0", "3"], ["12a", "3"],
                                  ["1", "-3"], ["99999999999", "3"], ["1", "2147483648"]])
def test_bad_arguments_exit_2(elf_cache: Path, args: list[str]) -> None:
    path = native_argv_path()
    assert subprocess.run([path, *args], stdin=subprocess.DEVNULL, timeout=10).returncode == 2


def native_argv_path() -> str:
    path = native_relay.relay_elf_path()
    assert path is not None
    return path


@native_only
def test_missing_process_or_fd_exits_1(elf_cache: Path, holder: Holder) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    for argv in (native_relay.relay_argv(gone.pid, 0), native_relay.relay_argv(holder.pid, 999)):
        assert argv is not None
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


# --- throughput: numbers for the lead, not assertions ----------------------------------------------


def relay_cost(argv_for: str) -> tuple[float, int]:
    """CPU ms per MiB for relaying BLAST_MIB MiB, and the resident set (kB) afterwards."""
    holder = Holder([sys.executable, "-c", BLAST])
    try:
        argv = native_argv(holder) if argv_for == "native" else python_argv(holder)
        pane = start_relay(argv)
        try:
            pane.drain(0.3)  # start-up done
            before = cpu_ns(pane.pid)
            pane.write(b"go\r")
            tail = b""
            deadline = time.monotonic() + 120
            while b"BLAST-DONE" not in tail:
                assert time.monotonic() < deadline, "the blast never finished"
                tail = (tail + pane.read(5.0))[-32:]
            spent = cpu_ns(pane.pid) - before
            return spent / 1e6 / BLAST_MIB, proc.resident_kb(pane.pid)
        finally:
            pane.close()
    finally:
        holder.close()


@native_only
def test_throughput_native_vs_python(elf_cache: Path) -> None:
    runs = {kind: [relay_cost(kind) for _ in range(3)] for kind in ("native", "python")}
    (native_ms, native_kb), (python_ms, python_kb) = (sorted(runs[kind])[1] for kind in ("native", "python"))
    print(f"\nCPU ms/MiB, 3 runs each: native {[round(ms, 2) for ms, _ in runs['native']]}, "
          f"python {[round(ms, 2) for ms, _ in runs['python']]}")
    print(f"relaying {BLAST_MIB} MiB (median): native {native_ms:.2f} ms CPU/MiB, Rss {native_kb} kB; "
          f"python {python_ms:.2f} ms CPU/MiB, Rss {python_kb} kB")
