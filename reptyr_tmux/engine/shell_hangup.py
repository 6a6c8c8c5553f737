"""Keep a job moved by `attach` safe from its old shell's hangup, for as long as that shell lives.

A shell hangs up every job in its table when its own terminal goes (bash on SIGHUP, also on `exit`
with huponexit; zsh with its HUP option), and a moved job is still in that table. So the job keeps
SIGHUP ignored after the move (attach(keep_sighup_ignored=True)) and its own action comes back as soon
as nothing can hang it up that way any more: when that shell has exited, or just before the relay
lets go of the new terminal (its window closed, the relay told to stop), so that closing the new
terminal hangs the job up as usual.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal

from reptyr_tmux.engine.remote import set_disposition
from reptyr_tmux.engine.transaction import signals_held
from reptyr_tmux.errors import ReptyrError


class ShellHangupGuard:
    def __init__(self, pid: int, own_sighup: bytes, shell: int):
        self.pid = pid
        self.own_sighup: bytes | None = own_sighup
        # The job itself, by a pidfd: once it has exited, its number may be another process's (a child
        # of its that left the session keeps the new terminal, and us, alive meanwhile).
        self.job_exit = _pidfd(pid)
        self.shell_exit = _pidfd(shell)  # readable once the shell has exited
        if self.shell_exit is None:
            self.give_back()  # already gone: nothing left to hang the job up

    def give_back(self) -> None:
        """The job's own SIGHUP action back (once; never to a process that merely has its number)."""
        if self.own_sighup is None:
            return
        action, self.own_sighup = self.own_sighup, None
        if self.job_exit is not None and not _has_exited(self.job_exit):
            # Held: a hangup or SIGTERM to us (the relay's) that came mid-way would cut it short for good.
            with signals_held(), contextlib.suppress(ReptyrError, OSError):
                set_disposition(self.pid, signal.SIGHUP, action)
        self.close()

    def close(self) -> None:
        for name in ("shell_exit", "job_exit"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _has_exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
