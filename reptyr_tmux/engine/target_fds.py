"""The new terminal's fds inside a target: opened as each old fd was, proven to be our terminal, and
parked copies of the old ones. Shared by the single-process move (attach.py) and the session move.

Each old fd on the terminal keeps what it was opened with: the new terminal is opened once per kind of
fd (access mode, O_NONBLOCK, O_APPEND, O_ASYNC), so a write-only fd stays write-only and a polling
loop's non-blocking fd stays non-blocking. O_ASYNC (signal-driven input) also needs the fd's owner
(F_GETOWN_EX) and signal (F_GETSIG): read in the target from the old fd, set on the new one. O_ASYNC
cannot be given to open(), and turning it on for a terminal makes the terminal's foreground group the
owner, so the order is: open, F_SETFL, then F_SETOWN_EX and F_SETSIG.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import TYPE_CHECKING, NamedTuple

from reptyr_tmux.errors import Refusal, RemoteError, ReptyrError

if TYPE_CHECKING:
    from reptyr_tmux.engine.remote import RemoteProcess

AT_FDCWD = -100
F_DUPFD_CLOEXEC = 1030
F_SETFL, F_SETSIG, F_GETSIG, F_SETOWN_EX, F_GETOWN_EX = 4, 10, 11, 15, 16
SAVED_FD_BASE = 100  # park copies of the old fds out of the way of the program's own (limit allowing)
REOPEN_FLAGS = os.O_ACCMODE | os.O_NONBLOCK | os.O_APPEND | os.O_ASYNC  # what each fd keeps of its flags
# Where in the caller's scratch page: the path to open, and the f_owner_ex we read and write (the
# callers keep their own data below 3072).
PATH_AT, OWNER_AT = 0, 3072


class Owner(NamedTuple):
    """Who gets an O_ASYNC fd's signal, and which signal (0: SIGIO), as the target numbers them."""

    kind: int  # F_OWNER_TID, F_OWNER_PID or F_OWNER_PGRP
    pid: int
    signum: int


def kind_of(flags: int) -> int:
    return flags & REOPEN_FLAGS


def open_per_kind(tx, target: RemoteProcess, page: int, tty_path: str, fd_flags: dict[int, int],
                  readable: bool = False) -> dict[int, int]:
    """The new terminal opened in `target` once per kind of fd in `fd_flags` (fd -> its open flags),
    plus a read-write one if `readable` (TIOCSCTTY wants a readable fd); kind -> new fd."""
    first_of_kind: dict[int, int] = {}
    for fd, flags in sorted(fd_flags.items()):
        first_of_kind.setdefault(kind_of(flags), fd)
    if readable and not any(kind & os.O_ACCMODE == os.O_RDWR for kind in first_of_kind):
        first_of_kind[os.O_RDWR] = -1
    opened = {}
    for kind, old_fd in sorted(first_of_kind.items()):
        owner = read_owner(target, page, old_fd) if kind & os.O_ASYNC else None
        opened[kind] = tx.step("open-tty", lambda kind=kind, owner=owner: open_kind(target, page, tty_path,
                                                                                     kind, owner),
                               lambda fd: target.syscall("close", fd), always=True)
    if readable and os.O_RDWR not in opened:  # an O_RDWR kind with more flags serves as well
        opened[os.O_RDWR] = next(fd for kind, fd in opened.items() if kind & os.O_ACCMODE == os.O_RDWR)
    return opened


def read_owner(target: RemoteProcess, page: int, fd: int) -> Owner:
    target.syscall("fcntl", fd, F_GETOWN_EX, page + OWNER_AT)
    kind, pid = struct.unpack("<ii", target.read(page + OWNER_AT, 8))
    return Owner(kind, pid, target.syscall("fcntl", fd, F_GETSIG, 0))


def open_kind(target: RemoteProcess, page: int, tty_path: str, kind: int, owner: Owner | None) -> int:
    fd = open_ours_in_target(target, page, tty_path, kind & ~os.O_ASYNC)
    if owner is None:
        return fd
    try:
        target.syscall("fcntl", fd, F_SETFL, kind & ~os.O_ACCMODE)
        target.write(page + OWNER_AT, struct.pack("<ii", owner.kind, owner.pid))
        target.syscall("fcntl", fd, F_SETOWN_EX, page + OWNER_AT)
        target.syscall("fcntl", fd, F_SETSIG, owner.signum)
    except BaseException:
        target.syscall("close", fd)
        raise
    return fd


def open_in_target(target: RemoteProcess, page: int | None, path: str, flags: int = os.O_RDWR) -> int:
    """Open `path` in the target (access mode and flags as given) on a high fd number, clear of every
    fd the program uses."""
    if page is None:
        with target.scratch() as temporary:
            return open_in_target(target, temporary, path, flags)
    target.write(page + PATH_AT, os.fsencode(path) + b"\0")
    try:
        low = target.syscall("openat", AT_FDCWD, page + PATH_AT, os.O_NOCTTY | flags, 0)
    except RemoteError as e:
        if e.errno == errno.EMFILE:
            raise _no_fd_left(target.pid, open_files_limit(target.pid)) from None
        raise
    try:
        return park(target, low)
    finally:
        target.syscall("close", low)


def open_ours_in_target(target: RemoteProcess, page: int, tty_path: str, flags: int = os.O_RDWR) -> int:
    """Open our terminal in the target, then prove the new fd is that very terminal: the target
    resolves the path in its own root and mount namespace, where /dev/pts may be another devpts."""
    try:
        fd = open_in_target(target, page, tty_path, flags)
    except RemoteError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR) and os.path.exists(tty_path):
            raise Refusal(other_view(target.pid, tty_path)) from None
        raise
    if not same_file(f"/proc/{target.pid}/fd/{fd}", tty_path):
        target.syscall("close", fd)
        raise Refusal(other_view(target.pid, tty_path))
    return fd


def park(target: RemoteProcess, fd: int) -> int:
    """A close-on-exec copy of `fd` on a high number, out of the program's way (below its fd limit)."""
    limit = open_files_limit(target.pid)
    base = SAVED_FD_BASE if limit is None or limit >= 2 * SAVED_FD_BASE else max(3, limit // 2)
    try:
        return target.syscall("fcntl", fd, F_DUPFD_CLOEXEC, base)
    except RemoteError as e:
        if e.errno in (errno.EMFILE, errno.EINVAL):
            raise _no_fd_left(target.pid, limit) from None
        raise


def _no_fd_left(pid: int, limit: int | None) -> ReptyrError:
    return ReptyrError(f"process {pid} has no free file descriptor left for the move (its limit, ulimit -n, "
                       f"is {limit}); nothing was changed. Raise it (prlimit --nofile=1024 --pid {pid}) and "
                       "try again")


def open_files_limit(pid: int) -> int | None:
    """The soft RLIMIT_NOFILE of `pid` (ulimit -n), from /proc/PID/limits."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line.split()[3]
                    return None if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return None


def other_view(pid: int, tty_path: str) -> str:
    return (f"process {pid} sees another /dev/pts (a container or chroot): {tty_path} there is not the "
            "new terminal, so it was left as it was; run reptyr-tmux, and tmux, inside its container or "
            "chroot")


def same_file(path: str, other: str) -> bool:
    try:
        a, b = os.stat(path), os.stat(other)
    except OSError:
        return False
    return (a.st_dev, a.st_ino, a.st_rdev) == (b.st_dev, b.st_ino, b.st_rdev)
