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
import signal

from reptyr_tmux.engine.remote import set_disposition
from reptyr_tmux.errors import ReptyrError


class ShellHangupGuard:
    def __init__(self, pid: int, own_sighup: bytes, shell: int):
        self.pid = pid
        self.own_sighup: bytes | None = own_sighup
        try:
            self.shell_exit = os.pidfd_open(shell)  # readable once the shell has exited
        except OSError:
            self.shell_exit = None
            self.give_back()  # already gone: nothing left to hang the job up

    def give_back(self) -> None:
        """The job's own SIGHUP action back (once; quietly if the job has exited)."""
        if self.own_sighup is None:
            return
        action, self.own_sighup = self.own_sighup, None
        with contextlib.suppress(ReptyrError, OSError):
            set_disposition(self.pid, signal.SIGHUP, action)
        self.close()

    def close(self) -> None:
        if self.shell_exit is not None:
            os.close(self.shell_exit)
            self.shell_exit = None
