"""Take a copy of another process's fd with pidfd_getfd: nothing runs in that process."""

from __future__ import annotations

import ctypes
import os

SYS_PIDFD_GETFD = 438  # the same number on every architecture


def take_fd(pid: int, fd: int) -> int:
    """Our own copy of `pid`'s fd `fd` (close-on-exec); OSError(errno) if not allowed or gone."""
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
