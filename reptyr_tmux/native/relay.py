"""The first process of a steal-mode pane: copies between the pane and a stolen pty master.

Usage: python -m reptyr_tmux.native.relay HOLDER_PID HOLDER_STARTTIME FD [REPORT]

It takes its own copy of the holder's master (pidfd_getfd), renames itself "reptyr-relay" so adopt
knows it is ready, and relays until the session ends (EIO on the master). Window size follows the
pane. Closing the pane kills it (SIGHUP); its master copy is then the last, so the kernel hangs up the
stolen session, just as closing a terminal window would.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import sys
import termios

from reptyr_tmux import proc
from reptyr_tmux.engine.pidfd import take_fd
from reptyr_tmux.frontends.ptyproxy import copy_window_size, relay
from reptyr_tmux.native.holder import report_ready

RELAY_NAME = b"reptyr-relay"  # our comm once we hold our copy of the master: adopt waits for it


def nudge_foreground(master: int) -> None:
    """SIGWINCH to the session's foreground job, so full-screen programs repaint at the new size."""
    try:
        pgrp = int.from_bytes(fcntl.ioctl(master, termios.TIOCGPGRP, b"\0\0\0\0"), "little")
        os.killpg(pgrp, signal.SIGWINCH)
    except OSError:
        pass


def _take_master(holder_pid: int, fd: int) -> int:
    try:
        return take_fd(holder_pid, fd)
    except OSError as e:
        if e.errno != errno.ENOSYS:
            raise
    from reptyr_tmux.engine.steal import MasterHolder, grab_master  # kernels < 5.6 only: the heavy way

    return grab_master(MasterHolder(holder_pid, (fd,), ""))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        holder_pid, starttime, fd = (int(a) for a in args[:3])
        if proc.read_stat(holder_pid).starttime != starttime:
            raise ValueError(f"process {holder_pid} is not the one that held the terminal any more")
        master = _take_master(holder_pid, fd)
    except Exception as e:  # say why in the pane, briefly, then go
        print(f"reptyr-tmux relay: {e}", file=sys.stderr)
        return 1
    ctypes.CDLL(None).prctl(15, RELAY_NAME, 0, 0, 0)  # PR_SET_NAME: "ready"
    if len(args) > 3:
        report_ready(args[3])  # in a popup: tell adopt our pid and tty
    copy_window_size(0, master)
    nudge_foreground(master)
    relay(master)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
