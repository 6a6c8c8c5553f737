"""The first process of an adoption pane: hold the pty open for exactly as long as the target lives.

Usage: ``python -m reptyr_tmux.native.holder PID STARTTIME [REPORT]``

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
execs a static executable (one PT_LOAD segment, no libc; 166 bytes on x86_64) from a memfd,
which does nothing but wait for POLLIN on the pidfd (moved to fd 3) and ``exit_group(0)``.
Its resident set is a handful of pages.

The native programs are assembler sources beside this file, one per machine: waiter-x86_64.S and
waiter-aarch64.S (46 and 60 bytes of code), holder-x86_64.S and holder-aarch64.S (223 and 270), the
relay's relay-x86_64.S and relay-aarch64.S; common-*.inc holds what they share. This
module carries their bytes as assembled (WAITER_*_CODE, HOLDER_*_CODE; tests/test_holder.py
assembles each source again and checks that they agree) and wraps them in an ELF header.

Fallback: on other architectures, when memfd_create/execve fail (e.g. a
vm.memfd_noexec=2 policy or a noexec mount), or when REPTYR_TMUX_HOLDER_PYTHON=1 is set,
the holder stays in Python and blocks in select.poll on the pidfd. That costs no CPU
either, but keeps the interpreter's ~10 MB resident for the target's lifetime.

Faster still, no Python in the pane at all: ``holder_argv(PID)`` returns ``[PATH, PID]``, a
pane command that runs a second native ELF, the holder (written once to a private cache file,
$XDG_RUNTIME_DIR/reptyr-tmux or ~/.cache/reptyr-tmux, named by its size and checksum, the first where
no one else can change any directory on the way: see _private_dir) doing steps 2-4
itself plus pidfd_open(PID) and the "reptyr-holder" rename, in ~a dozen syscalls. It does
not check the start time (the caller re-checks it once the holder is ready) and has no
REPORT, so popups and screen windows keep the Python holder; so does every caller when
holder_argv returns None (neither x86_64 nor aarch64, REPTYR_TMUX_HOLDER_PYTHON=1, no exec-able cache dir).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import stat
import struct
import sys
import termios

from reptyr_tmux import proc

PIDFD_FD = 3  # the waiter polls this fd; the holder dup2()s the pidfd here before exec
WAITER_NAME = "reptyr-tmux-holder"
FORCE_PYTHON_ENV = "REPTYR_TMUX_HOLDER_PYTHON"
MFD_EXEC = 0x0010  # linux >= 6.3; os.MFD_EXEC only exists from Python 3.12

LOAD_ADDR = 0x400000
EM_X86_64, EM_AARCH64 = 62, 183
ELF_HEADER_SIZE = 64
PROGRAM_HEADER_SIZE = 56
EXIT_USAGE = 2  # the ELF holder exits 2 on bad arguments (as the Python holder), 1 if no target
CACHE_DIR_NAME = "reptyr-tmux"


class HolderError(Exception):
    """A reason to refuse holding, printed as one line on stderr."""


# --- the native programs as ELF executables ---------------------------------------------------


def _elf_header(entry: int, e_machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, little endian, EV_CURRENT, SysV ABI
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,                    # e_type: ET_EXEC
        e_machine,            # e_machine: EM_X86_64 or EM_AARCH64
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


def _elf_with(code: bytes, e_machine: int = EM_X86_64) -> bytes:
    """`code` (position independent) as a complete static ELF64 executable image."""
    code_offset = ELF_HEADER_SIZE + PROGRAM_HEADER_SIZE
    file_size = code_offset + len(code)
    return _elf_header(LOAD_ADDR + code_offset, e_machine) + _program_header(file_size) + code


NATIVE_MACHINES = ("x86_64", "aarch64")  # where the waiter, the holder and the relay have a native form


def native_elf(for_machine: str | None, x86_64_code: bytes, aarch64_code: bytes) -> bytes:
    """A program as a static ELF64 executable for `for_machine` (None: ours): its code for each machine
    is the bytes of a .S file beside this one, as assembled."""
    if (for_machine or machine()) == "aarch64":
        return _elf_with(aarch64_code, EM_AARCH64)
    return _elf_with(x86_64_code)


def native_allowed(force_python_env: str) -> bool:
    """True if a native form runs here: a machine we have one for, and not forced off by the variable."""
    return machine() in NATIVE_MACHINES and os.environ.get(force_python_env) != "1"


# The waiter: waiter-x86_64.S and waiter-aarch64.S (beside this file) as assembled (test_holder.py checks
# that they agree).
WAITER_X86_64_CODE = bytes.fromhex(
    "48b80300000001000000504889e7b807000000be01000000baffffffff0f054883f8fc74e9b8e700000031ff0f05"
)
WAITER_AARCH64_CODE = bytes.fromhex(
    "690080d22900c0f2e90f1ff8e0030091210080d2020080d2030080d2040080d2280980d2010000d4"
    "1f1000b100ffff54000080d2c80b80d2010000d4"
)


def waiter_elf(for_machine: str | None = None) -> bytes:
    """The waiter (exec'd by the Python holder, pidfd on fd 3) as a static ELF64 executable."""
    return native_elf(for_machine, WAITER_X86_64_CODE, WAITER_AARCH64_CODE)


# --- the pane holder: the whole setup in machine code -------------------------------------------
#
# tmux runs this ELF directly as the pane's first process (see holder_argv), so the pane is ready
# about as soon as tmux has forked: no interpreter starts in it. It does what main() does, minus
# the start-time check (adopt checks the target's start time again once the holder is ready) and
# minus REPORT (popups and screen windows keep using the Python holder). Its code: holder-x86_64.S
# and holder-aarch64.S (beside this file) as assembled (test_holder.py checks that they agree).
HOLDER_X86_64_CODE = bytes.fromhex(
    "488b0c244883f9027511488b742410e8160000004889d385db75366a025feb036a015fb8e70000000f0531d231c0803e"
    "0074e8ac84c074182c303c0977dd486bd20a4801c24881faffffff7f76e5ebcbc36a006a006a006a014889e6bf010000"
    "0031d241ba08000000b80d0000000f0585c075ac31ffbe2254000031d2b8100000000f0589df31f6b8b20100000f0585"
    "c0788d5066c74424040100bf0f000000488d352a000000b89d0000000f054889e7b807000000be01000000baffffffff"
    "0f054883f8fc74e9b8e700000031ff0f057265707479722d686f6c64657200"
)
HOLDER_AARCH64_CODE = bytes.fromhex(
    "e00340f91f0800f121070054e10b40f928000094c00600b4f30300aa290080d2e97fbea9ff7f01a9200080d2e1030091"
    "020080d2030180d2c81080d2010000d4a00500b5000080d241848ad2020080d2a80380d2010000d4e00313aa010080d2"
    "483680d2010000d46004f8b7090060b2e90300f9e00180d241040010e81480d2010000d4e0030091210080d2020080d2"
    "030080d2040080d2280980d2010000d41f1000b100ffff54000080d213000014000080d222004039a201003422144038"
    "4201003442c000515f24007108010054430180d20008039be37b40b21f0003ebe9feff5402000014c0035fd6400080d2"
    "02000014200080d2c80b80d2010000d47265707479722d686f6c64657200"
)


def holder_elf(for_machine: str | None = None) -> bytes:
    """The pane holder as a static ELF64 executable for `for_machine` (None: ours): ``holder PID``."""
    return native_elf(for_machine, HOLDER_X86_64_CODE, HOLDER_AARCH64_CODE)


def _cache_dirs() -> list[str]:
    """Where the holder ELF may be kept, best first: tmux must be able to exec it by path."""
    bases = [os.environ.get("XDG_RUNTIME_DIR", ""),
             os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")]
    return [os.path.join(base, CACHE_DIR_NAME) for base in bases if os.path.isabs(base)]


def _private_dir(directory: str) -> str | None:
    """`directory`, resolved and created (0700) if needed, if no one but us (and root) can change
    anything on its path; None otherwise. tmux runs the file by path later: a directory on the way
    that another user may write (root's XDG_RUNTIME_DIR=/run/user/1001 after su without -) lets them
    swap our folder for theirs between our check and that exec."""
    from reptyr_tmux.trust import private_directory  # here: the Python holder's start-up stays lean

    resolved = private_directory(directory)
    return resolved if resolved is not None and os.lstat(resolved).st_uid == os.geteuid() else None


def private_cache_dir() -> str | None:
    """The best cache directory that qualifies (see _private_dir), for other files of ours that tmux
    reads or runs by path (the fzf picker's list); None if none does."""
    return next(filter(None, map(_private_dir, _cache_dirs())), None)


def _holds(path: str, image: bytes) -> bool:
    """True if `path` is our own regular, executable file with exactly `image` in it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022
                or not st.st_mode & stat.S_IXUSR or st.st_size != len(image)):
            return False
        return os.read(fd, len(image) + 1) == image
    except OSError:
        return False
    finally:
        os.close(fd)


def _write_atomically(path: str, image: bytes) -> None:
    """Replace `path` with an executable (0700) file holding `image`; no one ever sees it half written."""
    import tempfile  # here, not at the top: the Python holder's start-up must stay lean

    directory, name = os.path.split(path)
    fd, partial = tempfile.mkstemp(prefix=f".{name}.", dir=directory)  # O_EXCL, mode 0600, cloexec
    try:
        try:
            view = memoryview(image)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)  # before anyone execs it: an open writer makes execve fail with ETXTBSY
        os.rename(partial, path)
    except OSError:
        try:
            os.unlink(partial)
        except OSError:
            pass
        raise


def _runs(path: str) -> bool:
    """A fresh file's self-test: without arguments it must exit 2 (proves the mount lets us exec)."""
    import subprocess

    try:
        return subprocess.run([path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=5).returncode == EXIT_USAGE
    except (OSError, subprocess.SubprocessError):
        return False


def holder_elf_path() -> str | None:
    """The holder ELF as a file tmux can exec; None on other architectures (than x86_64 and aarch64),
    when REPTYR_TMUX_HOLDER_PYTHON=1, or if no usable place exists."""
    if not native_allowed(FORCE_PYTHON_ENV):
        return None
    return cached_elf("holder", holder_elf())


def cache_name(prefix: str, image: bytes) -> str:
    """The cached file's name: one per content (a checksum is enough: the content itself is compared
    before a file is used; hashlib would load OpenSSL, ~5 ms of every adoption)."""
    import zlib

    return f"{prefix}-{len(image)}-{zlib.crc32(image):08x}"


def cached_elf(prefix: str, image: bytes) -> str | None:
    """`image` as an executable file, written once per content (named by its checksum) in a private
    cache directory, and checked to run there (exit 2 without arguments); None if nowhere works."""
    name = cache_name(prefix, image)
    for wanted in _cache_dirs():
        directory = _private_dir(wanted)
        if directory is None:
            continue
        path = os.path.join(directory, name)
        if _holds(path, image) and os.access(path, os.X_OK):  # X_OK fails on a noexec mount
            return path
        try:
            _write_atomically(path, image)
        except OSError:
            continue
        if _holds(path, image) and _runs(path):
            return path
        try:
            os.unlink(path)  # written but cannot run here (a noexec mount, a security policy)
        except OSError:
            pass
    return None


def holder_argv(pid: int) -> list[str] | None:
    """The pane command that holds the pane for PID with no Python in the pane (x86_64, aarch64): tmux
    execs the cached ELF directly. None means: use the Python holder (``python -m
    reptyr_tmux.native.holder PID STARTTIME``) instead. The ELF does not check the start time, so the
    caller must re-check the target's start time once the holder is ready (comm in READY_COMMS)."""
    path = holder_elf_path()
    return None if path is None else [path, str(pid)]


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


def machine() -> str:
    """The CPU architecture we run on (os.uname: cheaper to import than platform)."""
    return os.uname().machine


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
    if not native_allowed(FORCE_PYTHON_ENV):
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
        print(f"usage: python -m reptyr_tmux.native.holder PID STARTTIME ({e})", file=sys.stderr)
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
