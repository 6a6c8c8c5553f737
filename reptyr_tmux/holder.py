"""The first process of an adoption pane: hold the pty open for exactly as long as the target lives.

Usage: ``python -m reptyr_tmux.holder PID STARTTIME [REPORT]``

tmux starts this as the pane's process, session leader of the new pty. It

1. pins the target's identity: opens a pidfd for PID, then checks that field 22 of
   /proc/PID/stat (start time in clock ticks since boot) still equals STARTTIME, so a
   recycled pid is refused (exit 1, one line on stderr);
2. ignores SIGHUP (TIOCNOTTY below sends one to our own foreground group, and tmux may
   send one later); SIG_IGN survives execve;
3. gives up its controlling tty with ioctl(0, TIOCNOTTY), so the target can later make
   the pty its own controlling tty with TIOCSCTTY;
4. keeps the pty slave open on fds 0/1/2 (never reading it) and waits until the target
   exits, then exits itself, and tmux closes the pane.

Why an ELF: the holder lives as long as the adopted process, possibly for weeks, and a
Python interpreter idling in poll() keeps ~10 MB resident. So after setup the holder
execs a hand-assembled static x86_64 executable of 166 bytes (one PT_LOAD segment,
no libc) from a memfd, which does nothing but ``poll({fd=3, POLLIN}, 1, -1)`` on the
pidfd (moved to fd 3) and ``exit_group(0)``. Its resident set is a handful of pages.

Fallback: on other architectures, when memfd_create/execve fail (e.g. a
vm.memfd_noexec=2 policy or a noexec mount), or when REPTYR_TMUX_HOLDER_PYTHON=1 is set,
the holder stays in Python and blocks in select.poll on the pidfd. That costs no CPU
either, but keeps the interpreter's ~10 MB resident for the target's lifetime.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
import select
import signal
import struct
import sys
import termios

from reptyr_tmux import proc

PIDFD_FD = 3  # the waiter polls this fd; the holder dup2()s the pidfd here before exec
WAITER_NAME = "reptyr-tmux-holder"
FORCE_PYTHON_ENV = "REPTYR_TMUX_HOLDER_PYTHON"
MFD_EXEC = 0x0010  # linux >= 6.3; os.MFD_EXEC only exists from Python 3.12

LOAD_ADDR = 0x400000
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56
SYS_POLL = 7
SYS_EXIT_GROUP = 231
POLLIN = 0x0001


class HolderError(Exception):
    """A reason to refuse holding, printed as one line on stderr."""


# --- the waiter: machine code --------------------------------------------------------------


def _le32(value: int) -> bytes:
    return struct.pack("<i" if value < 0 else "<I", value)


def _waiter_code() -> bytes:
    """x86_64 code: wait for POLLIN (exit) on fd 3, retrying on EINTR, then exit_group(0)."""
    pollfd = PIDFD_FD | (POLLIN << 32)  # struct pollfd {int fd=3; short events=POLLIN; short revents=0}
    prologue = b"".join([
        b"\x48\xb8" + struct.pack("<Q", pollfd),  # movabs rax, 0x0000000100000003
        b"\x50",                                  # push   rax             ; the pollfd lives on the stack
        b"\x48\x89\xe7",                          # mov    rdi, rsp        ; arg1: fds = &pollfd
    ])
    loop = b"".join([
        b"\xb8" + _le32(SYS_POLL),                # poll: mov eax, 7       ; SYS_poll
        b"\xbe" + _le32(1),                       # mov    esi, 1          ; arg2: nfds = 1
        b"\xba" + _le32(-1),                      # mov    edx, -1         ; arg3: timeout = -1 (forever)
        b"\x0f\x05",                              # syscall                ; rdi survives (rcx, r11 don't)
        b"\x48\x83\xf8" + struct.pack("<b", -errno.EINTR),  # cmp rax, -EINTR
    ])
    jump_back = b"\x74" + struct.pack("<b", -(len(loop) + 2))  # je poll  ; interrupted: poll again
    epilogue = b"".join([
        b"\xb8" + _le32(SYS_EXIT_GROUP),          # mov    eax, 231        ; SYS_exit_group
        b"\x31\xff",                              # xor    edi, edi        ; status 0
        b"\x0f\x05",                              # syscall
    ])
    return prologue + loop + jump_back + epilogue


def _elf_header(entry: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, little endian, EV_CURRENT, SysV ABI
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,                    # e_type: ET_EXEC
        62,                   # e_machine: EM_X86_64
        1,                    # e_version
        entry,                # e_entry
        ELF_HEADER_SIZE,      # e_phoff: the program header follows this header
        0,                    # e_shoff: no sections
        0,                    # e_flags
        ELF_HEADER_SIZE,      # e_ehsize
        PROGRAM_HEADER_SIZE,  # e_phentsize
        1,                    # e_phnum
        0, 0, 0,              # e_shentsize, e_shnum, e_shstrndx
    )


def _program_header(file_size: int) -> bytes:
    return struct.pack(
        "<IIQQQQQQ",
        1,          # p_type: PT_LOAD
        5,          # p_flags: PF_R | PF_X (no write: the only data is on the stack)
        0,          # p_offset: map the whole file, headers included
        LOAD_ADDR,  # p_vaddr
        LOAD_ADDR,  # p_paddr
        file_size,  # p_filesz
        file_size,  # p_memsz
        0x1000,     # p_align
    )


def waiter_elf() -> bytes:
    """The waiter as a complete static ELF64 x86_64 executable image."""
    code = _waiter_code()
    code_offset = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    file_size = code_offset + len(code)
    return _elf_header(LOAD_ADDR + code_offset) + _program_header(file_size) + code


# --- setup -----------------------------------------------------------------------------------


def open_target(pid: int, starttime: int) -> int:
    """A pidfd for PID, if PID is still the process that started at STARTTIME."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError as e:
        raise HolderError(f"cannot open pidfd for pid {pid}: {e.strerror}") from e
    try:
        actual = proc.read_stat(pid).starttime  # field 22 of /proc/PID/stat
    except (OSError, ValueError, IndexError) as e:
        os.close(pidfd)
        raise HolderError(f"cannot read start time of pid {pid}: {e}") from e
    if actual != starttime:
        os.close(pidfd)
        raise HolderError(
            f"pid {pid} was recycled: start time is {actual}, expected {starttime}; not holding"
        )
    return pidfd


def release_ctty() -> None:
    """Give up fd 0's tty as controlling tty, if it is ours (call with SIGHUP ignored)."""
    try:
        if os.isatty(0) and proc.read_stat(os.getpid()).tty_dev == os.fstat(0).st_rdev:
            fcntl.ioctl(0, termios.TIOCNOTTY)
    except OSError:
        pass  # not a tty, not our controlling tty, or already released


def move_to_waiter_fd(pidfd: int) -> None:
    """Put the pidfd on fd 3, inheritable across exec."""
    if pidfd != PIDFD_FD:
        os.dup2(pidfd, PIDFD_FD, inheritable=True)
        os.close(pidfd)
    os.set_inheritable(PIDFD_FD, True)  # dup2(3, 3) would not have cleared close-on-exec


# --- waiting ---------------------------------------------------------------------------------


def _memfd_with(image: bytes) -> int:
    # MFD_EXEC asks for an executable memfd explicitly (linux >= 6.3); older kernels reject
    # the flag with EINVAL, and there every memfd is executable. The memfd is close-on-exec:
    # fexecve of an ELF does not need the fd after exec, so the waiter does not inherit it.
    try:
        fd = os.memfd_create(WAITER_NAME, os.MFD_CLOEXEC | MFD_EXEC)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        fd = os.memfd_create(WAITER_NAME, os.MFD_CLOEXEC)
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.close(fd)
        raise
    return fd


def _restore_python_ignored_signals() -> None:
    # The interpreter sets SIGPIPE and SIGXFSZ to SIG_IGN at startup, and SIG_IGN survives
    # execve; the waiter should carry only the SIGHUP disposition we chose.
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signum, signal.SIG_DFL)


READY_NAME = b"reptyr-holder"  # our comm once the tty is released (what adopt waits for)
# ... and the waiter's, after exec from the memfd (the kernel names it "memfd:<name>", cut at 15).
READY_COMMS = frozenset({READY_NAME.decode(), f"memfd:{WAITER_NAME}"[:15]})


def announce_ready() -> None:
    """Rename ourselves: adopt must not inject before TIOCNOTTY, and a fresh child of tmux shows
    tty 0 too (before it took the pane's tty), so the name is the only unambiguous sign."""
    import ctypes

    ctypes.CDLL(None).prctl(15, READY_NAME, 0, 0, 0)  # PR_SET_NAME


def exec_waiter() -> None:
    """Replace this process with the ELF waiter; returns only if that is impossible."""
    if platform.machine() != "x86_64" or os.environ.get(FORCE_PYTHON_ENV) == "1":
        return
    try:
        fd = _memfd_with(waiter_elf())
    except OSError:
        return
    _restore_python_ignored_signals()
    try:
        os.execve(fd, [WAITER_NAME], os.environ)
    except OSError:
        os.close(fd)


def wait_in_python(pidfd: int) -> None:
    """Block (without spinning) until the pidfd reports that the target exited."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll():  # PEP 475: poll() itself retries on EINTR
        pass


# --- entry point -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> tuple[int, int, str | None]:
    """PID STARTTIME [REPORT]: REPORT is a file to write "our-pid our-tty" into once ready
    (popups have no pane_pid/pane_tty for adopt to read)."""
    if len(argv) not in (2, 3):
        raise ValueError("expected PID STARTTIME [REPORT]")
    pid, starttime = int(argv[0]), int(argv[1])
    if pid <= 0 or starttime < 0:
        raise ValueError("PID must be positive and STARTTIME not negative")
    return pid, starttime, argv[2] if len(argv) == 3 else None


def report_ready(path: str) -> None:
    """Write "pid tty" atomically (rename), so a reader never sees half a line."""
    partial = path + ".part"
    with open(partial, "w") as f:
        f.write(f"{os.getpid()} {os.ttyname(0)}\n")
    os.rename(partial, path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        pid, starttime, report = parse_args(args)
    except ValueError as e:
        print(f"usage: python -m reptyr_tmux.holder PID STARTTIME ({e})", file=sys.stderr)
        return 2
    try:
        pidfd = open_target(pid, starttime)
    except HolderError as e:
        print(f"reptyr-tmux holder: {e}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    release_ctty()
    announce_ready()
    if report:
        report_ready(report)
    move_to_waiter_fd(pidfd)
    exec_waiter()
    wait_in_python(PIDFD_FD)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
