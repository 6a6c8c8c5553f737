"""Steal mode: take a whole terminal session by taking its pty *master* from whoever holds it.

The holder (sshd, a terminal emulator, a script, another tmux) is found by scanning every process's
ptmx fds for the right pty: the right tty-index *in the right devpts instance* (pty numbers repeat in
every container), confirmed by the kernel before we rely on it. We take a copy of its master with
pidfd_getfd (nothing injected into it for that), then make it stop reading by putting /dev/null over
its master fds (injected, with an undo). Every process of the session — the shell, its jobs, their
children — keeps its terminal; only the other end of it moves to us, and a relay copies it to and
from the new pane.

While the holder lets go it may send the session leader SIGHUP (a terminal emulator whose child
"went away" does); the leader ignores SIGHUP for that moment only, then gets its own disposition back.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import socket
import struct
import tempfile
import time
from typing import NamedTuple

from reptyr_tmux import proc
from reptyr_tmux.engine.pidfd import take_fd
from reptyr_tmux.engine.remote import RemoteProcess, set_disposition
from reptyr_tmux.engine.survey import describe
from reptyr_tmux.engine.transaction import Transaction
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.native.relay import RELAY_NAME
from reptyr_tmux.text import printable

HUP_GRACE_S = 0.3  # how long a holder gets to react to losing the master before SIGHUP counts again
# (waited for by a detached child, off the adoption path: see _hand_back_sighup)
TIOCGPTPEER = 0x5441  # _IO('T', 0x41): open the slave of a master; not in termios


class MasterHolder(NamedTuple):
    pid: int
    fds: tuple[int, ...]
    comm: str


class Session(NamedTuple):
    """A terminal session to steal: its pty, its leader, and who holds the master."""

    tty: proc.Tty
    leader: int
    holders: tuple[MasterHolder, ...]
    members: tuple[int, ...]

    @property
    def tty_index(self) -> int:
        return self.tty.index or 0


def find_session(pid: int, stats: list[proc.Stat] | None = None) -> Session:
    """Who holds the master of `pid`'s terminal. Read-only: no holder candidate is touched."""
    stat = proc.read_stat(pid)
    path = proc.pts_path(stat.tty_dev) if stat.tty_dev else None
    if path is None:
        raise Refusal(f"process {describe(stat)} has no pseudo-terminal, so there is no session to take")
    stats = stats or proc.all_stats()
    tty = proc.session_tty(stat, stats)
    if tty is None:
        raise Refusal(f"cannot tell which {proc.tty_name(stat.tty_dev)} process {describe(stat)} is on "
                      "(neither it nor its session leader has it open, and pty numbers repeat in every "
                      "container); use --mode attach")
    masters = [(p, fd) for p in proc.all_pids() for fd in _ptmx_fds(p)]
    if masters and all(proc.tty_index(p, fd) is None for p, fd in masters):
        raise Refusal("this kernel does not say which pty a master is (no tty-index in /proc/PID/fdinfo), "
                      "so the holder of the session's terminal cannot be found without running code in "
                      "every candidate; use --mode attach")
    holders = tuple(h for h in (_holder(p, [fd for q, fd in masters if q == p], tty)
                                for p in dict.fromkeys(p for p, _ in masters)) if h)
    if not holders:
        raise Refusal(f"no process holds the master side of {path} (or we may not look at it)")
    members = tuple(s.pid for s in stats if s.sid == stat.sid)
    return Session(tty, stat.sid, holders, members)


def _ptmx_fds(pid: int) -> list[int]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    return [int(name) for name in names if _is_ptmx(f"/proc/{pid}/fd/{name}")]


def _is_ptmx(path: str) -> bool:
    try:
        return os.stat(path).st_rdev == proc.DEV_PTMX
    except OSError:
        return False


def _holder(pid: int, fds: list[int], tty: proc.Tty) -> MasterHolder | None:
    """`pid` as a holder of `tty`'s master: only its fds that are that very pty, of that instance."""
    mine = tuple(sorted(fd for fd in fds if proc.master_tty(pid, fd) == tty and _kernel_agrees(pid, fd, tty)))
    try:
        return MasterHolder(pid, mine, proc.read_stat(pid).comm) if mine else None
    except OSError:
        return None


def _kernel_agrees(pid: int, fd: int, tty: proc.Tty) -> bool:
    """Confirm master_tty's reading with the kernel itself, holder untouched: a copy of the master
    (pidfd_getfd) opens its slave (TIOCGPTPEER), which the kernel allows only while the devpts beside
    the ptmx node is still the master's own — a devpts mounted over it since fails (ENODEV), as
    does a namesake. Without pidfd_getfd (Linux < 5.6) the reading from /proc stands alone."""
    try:
        master = take_fd(pid, fd)
    except OSError as e:
        return e.errno == errno.ENOSYS
    try:
        peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    finally:
        os.close(master)
    try:
        return proc.tty_of_stat(os.fstat(peer)) == tty
    finally:
        os.close(peer)


def grab_master(holder: MasterHolder) -> int:
    """A copy of the holder's master fd: pidfd_getfd (nothing runs in the holder), or, on kernels
    without it (< 5.6), the holder made to send it to us over a private unix socket."""
    try:
        return take_fd(holder.pid, holder.fds[0])
    except OSError as e:
        if e.errno == errno.ENOSYS:
            return _master_sent_by_holder(holder)
        raise Refusal(f"cannot take the terminal from process {holder.pid} ({printable(holder.comm)}): "
                      f"{e.strerror}; it must be yours (or run as root)") from None


def _master_sent_by_holder(holder: MasterHolder) -> int:
    """SCM_RIGHTS from inside the holder: socket, connect to our listener (in a 0700 directory, so no
    one else can connect or listen there), sendmsg the fd, close. Nothing in it changes for good."""
    with tempfile.TemporaryDirectory(prefix="reptyr-tmux-") as private:
        path = os.path.join(private, "master")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(5)
            target = RemoteProcess.infect(holder.pid)
            try:
                _send_fd_from(target, holder.fds[0], path)
            finally:
                target.cure()
            connection, _ = listener.accept()
            with connection:
                _, fds, _, _ = socket.recv_fds(connection, 1, 1)
    if not fds:
        raise Refusal(f"process {holder.pid} did not pass its terminal over")
    return fds[0]


def _send_fd_from(target: RemoteProcess, fd: int, path: str) -> None:
    word = "Q" if target.arch.word == 8 else "I"
    with target.scratch() as page:
        address = struct.pack("<H", socket.AF_UNIX) + os.fsencode(path) + b"\0"
        iovec, byte, control, message = page + 512, page + 600, page + 640, page + 256
        cmsg = struct.pack(f"<{word}iii", struct.calcsize(f"<{word}ii") + 4, socket.SOL_SOCKET,
                           socket.SCM_RIGHTS, fd)
        cmsg += bytes(-len(cmsg) % target.arch.word)  # CMSG_SPACE: padded to a word
        header = (struct.pack(f"<{word}I{'4x' if word == 'Q' else ''}{word}{word}{word}{word}i",
                              0, 0, iovec, 1, control, len(cmsg), 0))
        target.write(page, address)
        target.write(iovec, struct.pack(f"<{word}{word}", byte, 1))
        target.write(byte, b"m")
        target.write(control, cmsg)
        target.write(message, header)
        sock = target.syscall("socket", socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, 0)
        try:
            target.syscall("connect", sock, page, len(address))
            target.syscall("sendmsg", sock, message, 0)
        finally:
            target.syscall("close", sock)


class SessionMoved(ReptyrError):
    """Something failed after a holder let go of the terminal: the session stays with the relay
    (giving it back could no longer work: the holder may have closed its end already)."""


def silence_holders(session: Session, verbose: bool = False) -> None:
    """Make every holder stop reading the master; the session leader rides out their SIGHUP.

    Blanking a holder is the one-way step of steal mode: once it runs again it may see EOF and quit.
    Each blanking is atomic (the holder is stopped while its fds change); after the first one we
    roll forward, never back."""
    ours = [h for h in session.holders if h.comm == RELAY_NAME.decode()]
    foreign = [h for h in session.holders if h not in ours]
    tx = Transaction(verbose)
    try:
        with tx:
            leader = session.leader
            own = tx.step("leader-ignores-sighup", lambda: set_disposition(leader, signal.SIGHUP, None),
                          lambda old: set_disposition(leader, signal.SIGHUP, old))
            for n, holder in enumerate(foreign):
                tx.step(f"silence-holder-{n}", lambda h=holder: _blank_fds(h))
            tx.step("hand-back-sighup", lambda: _hand_back_sighup(session.leader, own, foreign))
    except ReptyrError as e:
        if any(step.startswith("silence-holder") for step in tx.steps_done):
            raise SessionMoved(f"the session moved, but then: {e}") from e
        raise
    for relay in ours:  # re-adoption: our previous relay simply retires (its pane closes)
        with contextlib.suppress(ProcessLookupError):
            os.kill(relay.pid, signal.SIGTERM)


def _hand_back_sighup(leader: int, action: bytes, holders: list[MasterHolder]) -> None:
    """The leader's own SIGHUP action back once the silenced holders can no longer hang it up: when
    they have exited, or HUP_GRACE_S after they lost the master. A detached child waits for that, so
    the adoption does not."""
    from reptyr_tmux.engine.worker import run_detached

    exits, unseen = [], False
    for holder in holders:
        try:
            exits.append(os.pidfd_open(holder.pid))  # readable once it has exited
        except OSError as e:
            unseen = unseen or e.errno != errno.ESRCH  # (ESRCH: gone already; else Linux < 5.3)

    def wait_then_give_back() -> None:
        deadline = time.monotonic() + HUP_GRACE_S
        waiting = list(exits)
        while waiting and time.monotonic() < deadline:
            ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
            waiting = [fd for fd in waiting if fd not in ready]
        if unseen:
            time.sleep(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ReptyrError, OSError):
            set_disposition(leader, signal.SIGHUP, action)

    try:
        if holders:
            run_detached(wait_then_give_back)
        else:  # only our own relay held it (re-adoption): nothing will hang the leader up
            set_disposition(leader, signal.SIGHUP, action)
    finally:
        for fd in exits:
            os.close(fd)


def _blank_fds(holder: MasterHolder) -> None:
    """In the holder, all at once while it is stopped: /dev/null over each of its master fds. Fails
    as a whole: fds already changed are put back before it runs again."""
    target = RemoteProcess.infect(holder.pid)
    saved: dict[int, tuple[int, int]] = {}
    try:
        with target.scratch() as page:
            target.write(page, b"/dev/null\0")
            null = target.syscall("openat", -100, page, os.O_RDWR, 0)
            try:
                for fd in holder.fds:
                    flags = os.O_CLOEXEC if proc.fd_flags(holder.pid, fd) & os.O_CLOEXEC else 0
                    saved[fd] = (target.syscall("fcntl", fd, 1030, 100), flags)  # F_DUPFD_CLOEXEC
                    target.syscall("dup3", null, fd, flags)
            except BaseException:
                for fd, (copy, flags) in saved.items():
                    target.syscall("dup3", copy, fd, flags)
                raise
            finally:
                for copy, _flags in saved.values():
                    target.syscall("close", copy)
                target.syscall("close", null)
    finally:
        target.cure()
