"""Who controls a process, a directory or a socket: the checks before we run anything near them.

Another user is an attacker: a process of theirs may be named like anything, a socket of theirs may
answer like a tmux server, a directory they can write may be swapped under us between a check and an
exec. So a program we hand to tmux lives only where no one else can change any directory on its path
(ssh's StrictModes rule), a tmux client is only pointed at a socket whose owner is the user it runs
as, and a process counts as a user's only when all its uids are that user's.
"""

from __future__ import annotations

import os
import pwd
import stat

CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8"}  # for the programs we run


def process_uids(pid: int) -> tuple[int, ...]:
    """Real, effective, saved and filesystem uid of `pid` (from /proc/PID/status); () if gone."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY)  # plain fds: the picker reads thousands
    except OSError:
        return ()
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return ()
    finally:
        os.close(fd)
    start = raw.find(b"\nUid:")
    if start < 0:
        return ()
    return tuple(int(field) for field in raw[start + 5 : raw.index(b"\n", start + 1)].split())


def runs_as(pid: int, uid: int) -> bool:
    """All of `pid`'s uids are `uid`: not a setuid program started by someone else, nor one that
    changed identity half-way."""
    uids = process_uids(pid)
    return bool(uids) and all(u == uid for u in uids)


def started_by(pid: int, uid: int) -> bool:
    """Real and effective uid are `uid`: the user's own program (a setuid one another user started
    has our effective uid but their real one)."""
    uids = process_uids(pid)
    return len(uids) >= 2 and uids[0] == uid and uids[1] == uid


def _private_to(st: os.stat_result, uid: int) -> bool:
    """A directory owned by `uid` or root that no one else may write in (sticky or not)."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid in (uid, 0) and not st.st_mode & 0o022


def private_directory(path: str) -> str | None:
    """`path` resolved (realpath), with its missing directories created (0700), if every directory
    from / down to it is ours or root's and writable by no one else; None otherwise. Only such a
    place keeps what we check there the same until tmux runs it: whoever may write a directory on
    the way may rename a folder away and put theirs in its place (renameat2 RENAME_EXCHANGE)."""
    me = os.geteuid()
    resolved = os.path.realpath(path)
    current = "/"
    for part in [""] + [p for p in resolved.split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current, 0o700)  # inside a directory just proven private: no race
                st = os.lstat(current)
            except OSError:
                return None
        except OSError:
            return None
        if not _private_to(st, me):
            return None
    return resolved


def open_socket_of(path: str, uid: int) -> int | None:
    """An O_PATH fd for the unix socket at `path`, if it is `uid`'s own in a directory owned by
    `uid` or root that no one else may write; None otherwise. Handing a client /proc/self/fd/N
    instead of the path means it connects to exactly the socket checked here."""
    directory, name = os.path.split(path)
    if not os.path.isabs(path) or not name:
        return None
    flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dir_fd = os.open(directory, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        if not _private_to(os.fstat(dir_fd), uid):
            return None
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    if stat.S_ISSOCK(st.st_mode) and st.st_uid == uid:
        return fd
    os.close(fd)
    return None


def as_user(uid: int) -> dict:
    """subprocess arguments that run a program as `uid` (its own group, no supplementary groups)
    when that is not us; nothing when it is. Raises KeyError for a uid without a passwd entry."""
    if uid == os.geteuid():
        return {}
    return {"user": uid, "group": pwd.getpwuid(uid).pw_gid, "extra_groups": []}
