"""The pane holder, with real processes: a target, and a holder that is session leader of a fresh pty."""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import wait_for as wait_until

from reptyr_tmux import proc
from reptyr_tmux.native import holder, native_relay

REPO = Path(__file__).resolve().parent.parent
TIOCSCTTY = 0x540E  # not in Python's termios module on every version
SIGHUP_BIT = 1 << (signal.SIGHUP - 1)


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat split so that index 0 is field 1 (pid) as numbered in proc(5)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    comm_end = raw.rindex(")")
    return [raw[: raw.index(" ")], raw[raw.index("(") + 1 : comm_end], *raw[comm_end + 2 :].split()]


def stat_field(pid: int, number: int) -> int:
    return int(stat_fields(pid)[number - 1])


def status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return value.strip()
    raise KeyError(key)


def cpu_ticks(pid: int) -> int:
    return stat_field(pid, 14) + stat_field(pid, 15)  # utime + stime


def holder_env(force_python: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop(holder.FORCE_PYTHON_ENV, None)
    if force_python:
        env[holder.FORCE_PYTHON_ENV] = "1"
    return env


def spawn_on_new_pty(argv: list[str], env: dict[str, str]) -> tuple[int, int, str]:
    """Fork `argv` as session leader of a fresh pty with fds 0/1/2 on its slave, as tmux starts a pane.

    Returns (pid, master fd, slave path).
    """
    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(master)
            os.setsid()
            os.dup2(slave, 0)
            os.dup2(slave, 1)
            os.dup2(slave, 2)
            if slave > 2:
                os.close(slave)
            fcntl.ioctl(0, TIOCSCTTY, 0)
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    os.close(slave)
    return pid, master, slave_path


@dataclass
class Pane:
    target: subprocess.Popen[bytes]
    holder_pid: int
    master: int
    slave_path: str
    holder_exit: int | None = None

    def holder_alive(self) -> bool:
        """Reaps the holder (our child) if it has exited, remembering its exit code."""
        if self.holder_exit is None:
            done, status = os.waitpid(self.holder_pid, os.WNOHANG)
            if done:
                self.holder_exit = os.waitstatus_to_exitcode(status)
        return self.holder_exit is None

    def wait_holder(self, timeout: float) -> int | None:
        """The holder's exit code if it exits within `timeout` seconds, else None."""
        deadline = time.monotonic() + timeout
        while self.holder_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.holder_exit

    def pty_output(self) -> bytes:
        try:
            return os.read(self.master, 65536) if select.select([self.master], [], [], 0)[0] else b""
        except OSError:
            return b""


def start_pane(force_python: bool) -> Pane:
    target = subprocess.Popen(["sleep", "30"])
    starttime = stat_field(target.pid, 22)
    argv = [sys.executable, "-m", "reptyr_tmux.native.holder", str(target.pid), str(starttime)]
    pid, master, slave_path = spawn_on_new_pty(argv, holder_env(force_python))
    return Pane(target, pid, master, slave_path)


def stop_pane(pane: Pane) -> None:
    pane.target.kill()
    pane.target.wait()
    if pane.wait_holder(2.0) is None:
        os.kill(pane.holder_pid, signal.SIGKILL)
        pane.wait_holder(10.0)
    os.close(pane.master)


@pytest.fixture
def pane() -> Iterator[Pane]:
    p = start_pane(force_python=False)
    yield p
    stop_pane(p)


@pytest.fixture
def python_pane() -> Iterator[Pane]:
    p = start_pane(force_python=True)
    yield p
    stop_pane(p)


def released_tty(pid: int) -> bool:
    return stat_field(pid, 7) == 0


def wait_for_waiter(pane: Pane) -> None:
    def exec_done() -> bool:
        if not pane.holder_alive():
            raise AssertionError(f"holder died during setup; pty said {pane.pty_output()!r}")
        return "memfd:" in os.readlink(f"/proc/{pane.holder_pid}/exe")

    wait_until(exec_done, 10.0, "the holder to exec its memfd waiter")


def assert_holds_pty(pane: Pane) -> None:
    pid = pane.holder_pid
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == pane.slave_path
    assert "pidfd" in os.readlink(f"/proc/{pid}/fd/3")


# --- the ELF waiter ----------------------------------------------------------------------------


WAITER_ENDS = {  # exit_group(0), in each machine's code
    "x86_64": (62, b"\xb8\xe7\x00\x00\x00\x31\xff\x0f\x05"),
    "aarch64": (183, bytes.fromhex("000080d2c80b80d2010000d4")),
}


@pytest.mark.parametrize("machine", sorted(WAITER_ENDS))
def test_waiter_elf_is_one_static_load_segment(machine: str) -> None:
    image = holder.waiter_elf(machine)
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1  # ELF64, little endian
    e_type, e_machine = struct.unpack_from("<HH", image, 16)
    entry, phoff = struct.unpack_from("<QQ", image, 24)
    phnum = struct.unpack_from("<H", image, 56)[0]
    assert (e_type, e_machine, phnum) == (2, WAITER_ENDS[machine][0], 1)  # ET_EXEC, its machine, one header
    p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz = struct.unpack_from("<IIQQQQQ", image, phoff)
    assert (p_type, p_flags, p_offset) == (1, 5, 0)  # PT_LOAD, R+X, whole file
    assert p_filesz == p_memsz == len(image)
    assert p_vaddr < entry < p_vaddr + len(image)
    assert image.endswith(WAITER_ENDS[machine][1])
    print(f"{machine} waiter ELF: {len(image)} bytes")
    assert len(image) < 512


def assembler_for(machine: str) -> list[str] | None:
    """An assembler and objcopy for `machine`: the cross binutils (MACHINE-linux-gnu-as), or on that
    machine the plain ones."""
    cross = f"{machine}-linux-gnu-"
    for prefix in (cross, "") if os.uname().machine == machine else (cross,):
        if shutil.which(prefix + "as") and shutil.which(prefix + "objcopy"):
            return [prefix + "as", prefix + "objcopy"]
    return None


NATIVE_DIR = REPO / "reptyr_tmux" / "native"
AS_FLAGS = {"x86_64": ["--64"], "aarch64": []}
BINUTILS = {"x86_64": "binutils (or binutils-x86-64-linux-gnu)", "aarch64": "binutils-aarch64-linux-gnu"}
NATIVE_SOURCES = {  # each native program's source: its machine, and the bytes we carry for it
    "waiter-x86_64.S": ("x86_64", holder.WAITER_X86_64_CODE),
    "holder-x86_64.S": ("x86_64", holder.HOLDER_X86_64_CODE),
    "relay-x86_64.S": ("x86_64", native_relay.RELAY_X86_64_CODE),
    "waiter-aarch64.S": ("aarch64", holder.WAITER_AARCH64_CODE),
    "holder-aarch64.S": ("aarch64", holder.HOLDER_AARCH64_CODE),
    "relay-aarch64.S": ("aarch64", native_relay.RELAY_AARCH64_CODE),
}


def needs_assembler(machine: str, *values: str) -> object:
    """pytest.param(*values), skipped (with the package to install) where no assembler for `machine` is."""
    return pytest.param(*values, marks=pytest.mark.skipif(
        assembler_for(machine) is None, reason=f"needs {BINUTILS[machine]} to assemble {machine} code"))


def assemble(machine: str, source: Path, tmp_path: Path) -> bytes:
    """The code (.text) that `source` assembles to, with its folder on the include path."""
    assembler, objcopy = assembler_for(machine)
    obj, code = tmp_path / "code.o", tmp_path / "code.bin"
    subprocess.run([assembler, *AS_FLAGS[machine], "-I", str(source.parent), "-o", str(obj), str(source)],
                   check=True)
    subprocess.run([objcopy, "-O", "binary", "-j", ".text", str(obj), str(code)], check=True)
    return code.read_bytes()


@pytest.mark.parametrize("source", [needs_assembler(machine, source)
                                    for source, (machine, _) in sorted(NATIVE_SOURCES.items())])
def test_native_code_is_its_source_assembled(source: str, tmp_path: Path) -> None:
    machine, carried = NATIVE_SOURCES[source]
    assert assemble(machine, NATIVE_DIR / source, tmp_path) == carried


@pytest.mark.parametrize(("machine", "line", "changed_line"), [
    needs_assembler("x86_64", "x86_64", "mov     esi, TIOCNOTTY ", "mov     esi, TIOCNOTTY + 1 "),
    needs_assembler("aarch64", "aarch64", "mov     x1, #0x5422", "mov     x1, #0x5423"),
])
def test_agreement_sees_a_changed_instruction(machine: str, line: str, changed_line: str,
                                              tmp_path: Path) -> None:
    """The check above compares every byte: one immediate changed in a copy of a source shows."""
    source = f"holder-{machine}.S"
    text = (NATIVE_DIR / source).read_text()
    assert text.count(line) == 1
    (tmp_path / source).write_text(text.replace(line, changed_line))  # TIOCNOTTY -> another ioctl
    for include in NATIVE_DIR.glob("common-*.inc"):
        shutil.copy(include, tmp_path)
    code, carried = assemble(machine, tmp_path / source, tmp_path), NATIVE_SOURCES[source][1]
    assert len(code) == len(carried) and code != carried
    assert sum(a != b for a, b in zip(code, carried)) == 1  # the one byte the immediate's low bits are in


@pytest.mark.skipif(os.uname().machine not in holder.NATIVE_MACHINES, reason="no ELF waiter for this machine")
def test_elf_holder_holds_the_pty_cheaply_until_the_target_dies(pane: Pane) -> None:
    pid = pane.holder_pid
    wait_for_waiter(pane)

    rss_kb = proc.resident_kb(pid)
    print(f"holder Rss: {rss_kb} kB (VmRSS {status_field(pid, 'VmRSS')})")
    assert rss_kb < 1700

    assert released_tty(pid), f"tty_nr is {stat_field(pid, 7)}: TIOCNOTTY did not happen"
    assert int(status_field(pid, "SigIgn"), 16) & SIGHUP_BIT
    assert_holds_pty(pane)
    assert pane.pty_output() == b"", "the holder must print nothing"

    survives_signals_idles_and_exits_with_the_target(pane, pid)


def test_recycled_starttime_is_refused() -> None:
    target = subprocess.Popen(["sleep", "30"])
    try:
        wrong = stat_field(target.pid, 22) + 1
        result = subprocess.run(
            [sys.executable, "-m", "reptyr_tmux.native.holder", str(target.pid), str(wrong)],
            env=holder_env(force_python=False), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=10,
        )
    finally:
        target.kill()
        target.wait()
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert "recycled" in message and str(target.pid) in message


def test_vanished_target_is_refused() -> None:
    target = subprocess.Popen(["true"])
    starttime = stat_field(target.pid, 22)
    target.wait()
    result = subprocess.run(
        [sys.executable, "-m", "reptyr_tmux.native.holder", str(target.pid), str(starttime)],
        env=holder_env(force_python=False), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=10,
    )
    assert result.returncode == 1
    assert str(target.pid) in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_python_fallback_holds_until_the_target_dies(python_pane: Pane) -> None:
    pane = python_pane
    pid = pane.holder_pid

    def set_up() -> bool:
        if not pane.holder_alive():
            raise AssertionError(f"holder died during setup; pty said {pane.pty_output()!r}")
        return released_tty(pid) and "pidfd" in os.readlink(f"/proc/{pid}/fd/3")

    wait_until(set_up, 10.0, "the Python holder to release its tty and move the pidfd to fd 3")
    time.sleep(0.1)  # let it reach poll()
    assert "memfd:" not in os.readlink(f"/proc/{pid}/exe")
    assert int(status_field(pid, "SigIgn"), 16) & SIGHUP_BIT
    assert_holds_pty(pane)

    os.kill(pid, signal.SIGHUP)
    before = cpu_ticks(pid)
    time.sleep(0.5)
    assert pane.holder_alive(), "the Python holder did not wait for the target"
    assert cpu_ticks(pid) == before, "the Python holder is spinning"

    pane.target.kill()
    assert pane.wait_holder(1.0) == 0, "the Python holder did not exit within 1 s of the target"


# --- the ELF holder: tmux execs it directly (holder_argv) -------------------------------------

elf_only = pytest.mark.skipif(os.uname().machine not in holder.NATIVE_MACHINES,
                              reason="the ELF holder is x86_64 and aarch64 only")


@pytest.fixture
def elf_cache(private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private runtime dir for the cached ELF (not the user's), and no forced Python holder."""
    runtime = private_tmp / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv(holder.FORCE_PYTHON_ENV, raising=False)
    return runtime / holder.CACHE_DIR_NAME


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except OSError:
        return ""


def start_elf_pane() -> tuple[Pane, float]:
    """A target, and the ELF holder for it as session leader of a fresh pty; and how long (s) the
    holder took from fork to announcing itself ready, as adopt would see it."""
    target = subprocess.Popen(["sleep", "30"])
    argv = holder.holder_argv(target.pid)
    assert argv is not None and argv[1:] == [str(target.pid)]
    started = time.monotonic()
    pid, master, slave_path = spawn_on_new_pty(argv, holder_env(force_python=False))
    pane = Pane(target, pid, master, slave_path)
    deadline = started + 10.0
    while comm(pid) not in holder.READY_COMMS:
        if not pane.holder_alive() or time.monotonic() > deadline:
            stop_pane(pane)
            raise AssertionError(f"the ELF holder never got ready (exit {pane.holder_exit})")
        time.sleep(0.0002)
    return pane, time.monotonic() - started


# How soon the ELF holder is ready after fork. aarch64 is tested under emulation (.ci/arm64.sh: qemu's TCG,
# ~10x slower; 173 ms seen with a second guest running beside it on 2 cores).
READY_WITHIN_S = {"x86_64": 0.050, "aarch64": 0.500}


@pytest.fixture
def elf_pane(elf_cache: Path) -> Iterator[tuple[Pane, float]]:
    pane, ready_s = start_elf_pane()
    yield pane, ready_s
    stop_pane(pane)


@pytest.mark.parametrize("machine", sorted(WAITER_ENDS))
def test_holder_elf_is_one_static_load_segment(machine: str) -> None:
    image = holder.holder_elf(machine)
    entry, phoff = struct.unpack_from("<QQ", image, 24)
    assert struct.unpack_from("<HH", image, 16) == (2, WAITER_ENDS[machine][0])  # ET_EXEC, its machine
    p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz = struct.unpack_from("<IIQQQQQ", image, phoff)
    assert (p_type, p_flags, p_offset) == (1, 5, 0) and p_filesz == p_memsz == len(image)
    assert p_vaddr < entry < p_vaddr + len(image)
    assert image.endswith(holder.READY_NAME + b"\0")
    assert holder.READY_NAME.decode() in holder.READY_COMMS
    print(f"{machine} holder ELF: {len(image)} bytes")
    assert len(image) < 512


@elf_only
def test_elf_holder_is_ready_fast_and_holds_the_pty_cheaply(elf_pane: tuple[Pane, float]) -> None:
    pane, ready_s = elf_pane
    pid = pane.holder_pid
    print(f"ELF holder ready {ready_s * 1000:.2f} ms after fork")
    assert ready_s < READY_WITHIN_S.get(os.uname().machine, 0.050)
    assert comm(pid) == "reptyr-holder"

    assert released_tty(pid), f"tty_nr is {stat_field(pid, 7)}: TIOCNOTTY did not happen"
    assert int(status_field(pid, "SigIgn"), 16) & SIGHUP_BIT
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == pane.slave_path
    fds = {fd: os.readlink(f"/proc/{pid}/fd/{fd}") for fd in map(int, os.listdir(f"/proc/{pid}/fd"))}
    assert sum("pidfd" in link for link in fds.values()) == 1, fds
    rss_kb = proc.resident_kb(pid)
    print(f"ELF holder Rss: {rss_kb} kB (VmRSS {status_field(pid, 'VmRSS')})")
    assert rss_kb < 200
    assert pane.pty_output() == b"", "the holder must print nothing"

    survives_signals_idles_and_exits_with_the_target(pane, pid)


@elf_only
@pytest.mark.parametrize("args", [[], [""], ["0"], ["-1"], ["+5"], ["12x"], [" 12"], ["99999999999"],
                                  ["1", "2"]])
def test_elf_holder_refuses_bad_arguments(elf_cache: Path, args: list[str]) -> None:
    argv = holder.holder_argv(1)
    assert argv is not None
    result = subprocess.run([argv[0], *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (2, b"", b"")


@elf_only
def test_elf_holder_refuses_a_vanished_target(elf_cache: Path) -> None:
    target = subprocess.Popen(["true"])
    target.wait()
    argv = holder.holder_argv(target.pid)
    assert argv is not None
    result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=5)
    assert (result.returncode, result.stdout, result.stderr) == (1, b"", b"")


@elf_only
def test_holder_argv_reuses_the_cached_file_and_replaces_a_corrupt_one(elf_cache: Path) -> None:
    first = holder.holder_argv(4242)
    assert first is not None
    path = Path(first[0])
    assert path.parent == elf_cache and path.name.startswith("holder-")
    assert path.read_bytes() == holder.holder_elf()
    assert path.stat().st_mode & 0o777 == 0o700 and elf_cache.stat().st_mode & 0o777 == 0o700
    inode = path.stat().st_ino

    assert holder.holder_argv(4243) == [str(path), "4243"]
    assert path.stat().st_ino == inode, "the cached file was rewritten"

    with open(path, "r+b") as f:  # same size, wrong content
        f.seek(100)
        f.write(b"\xcc")
    assert holder.holder_argv(4244) == [str(path), "4244"]
    assert path.read_bytes() == holder.holder_elf()
    assert path.stat().st_ino != inode, "not replaced by rename"

    path.write_bytes(b"#!/bin/sh\n")  # truncated / other content
    assert holder.holder_argv(1) == [str(path), "1"]
    assert path.read_bytes() == holder.holder_elf()
    assert sorted(p.name for p in elf_cache.iterdir()) == [path.name], "a temporary file was left behind"


def test_holder_argv_falls_back_to_python(elf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(holder.FORCE_PYTHON_ENV, "1")
    assert holder.holder_argv(1) is None
    monkeypatch.delenv(holder.FORCE_PYTHON_ENV)
    monkeypatch.setattr(holder, "machine", lambda: "riscv64")
    assert holder.holder_argv(1) is None
    monkeypatch.undo()
    blocker = elf_cache.parent / "file"
    blocker.write_text("")
    monkeypatch.setattr(holder, "_cache_dirs", lambda: [str(blocker / "reptyr-tmux")])  # cannot be created
    assert holder.holder_argv(1) is None


def survives_signals_idles_and_exits_with_the_target(pane, pid: int) -> None:
    """SIGHUP and a stop/continue (which interrupts poll()) leave it waiting; it costs no CPU
    meanwhile; and it exits 0 within a second of its target."""
    os.kill(pid, signal.SIGHUP)
    time.sleep(0.1)
    assert pane.holder_alive(), "SIGHUP ended the holder"
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: stat_fields(pid)[2] == "T", 5.0, "the holder to stop")
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.1)
    assert pane.holder_alive(), "a stop/continue ended the holder"
    before = cpu_ticks(pid)
    time.sleep(0.5)
    assert cpu_ticks(pid) == before, "the holder is using CPU"
    pane.target.kill()
    assert pane.wait_holder(1.0) == 0, "the holder did not exit within 1 s of the target"
