"""Take a copy of another process's fd with pidfd_getfd: nothing runs in that process."""

from __future__ import annotations

import ctypes
import errno
import os

SYS_PIDFD_GETFD = 438  # the same number on every architecture
FORCE_FALLBACK_ENV = "REPTYR_TMUX_NO_PIDFD_GETFD"  # test-only: behave as on Linux < 5.6


def available() -> bool:
    """Whether this kernel has pidfd_getfd (Linux 5.6+)."""
    if os.environ.get(FORCE_FALLBACK_ENV):
        return False
    try:
        os.close(take_fd(os.getpid(), 0))
    except OSError as e:
        return e.errno != errno.ENOSYS  # EBADF (no fd 0 here) still means it exists
    return True


def take_fd(pid: int, fd: int) -> int:
    """Our own copy of `pid`'s fd `fd` (close-on-exec); OSError(errno) if not allowed or gone."""
    if os.environ.get(FORCE_FALLBACK_ENV):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    pidfd = os.pidfd_open(pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if copy < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        os.set_inheritable(copy, False)
        return copy
    finally:
        os.close(pidfd)
