"""Read-only facts about processes, from /proc. Nothing here changes a process."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

PF_KTHREAD = 0x00200000
DEV_TTY = os.makedev(5, 0)
DEV_CONSOLE = os.makedev(5, 1)


class Stat(NamedTuple):
    """The fields of /proc/PID/stat the engine needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    tty_nr: int
    tpgid: int
    flags: int
    starttime: int

    @property
    def tty_dev(self) -> int | None:
        """The controlling terminal as a device number (st_rdev), or None."""
        if self.tty_nr == 0:
            return None
        major = (self.tty_nr >> 8) & 0xFFF
        minor = (self.tty_nr & 0xFF) | ((self.tty_nr >> 12) & 0xFFF00)
        return os.makedev(major, minor)


def read_stat(pid: int) -> Stat:
    fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)  # plain fds: the picker reads thousands of these
    try:
        raw = os.read(fd, 4096).decode("utf-8", "replace")
    finally:
        os.close(fd)
    # comm may hold spaces and parentheses: it ends at the *last* ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    return Stat(
        pid=pid, comm=comm, state=rest[0], ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]),
        tty_nr=int(rest[4]), tpgid=int(rest[5]), flags=int(rest[6]), starttime=int(rest[19]),
    )


def read_status(pid: int) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def signal_mask(status: dict[str, str], key: str) -> int:
    """SigIgn / SigCgt / SigBlk as an int (bit N-1 is signal N)."""
    return int(status.get(key, "0"), 16)


def has_signal(mask: int, signum: int) -> bool:
    return bool(mask >> (signum - 1) & 1)


def open_fds(pid: int) -> list[int]:
    return sorted(int(name) for name in os.listdir(f"/proc/{pid}/fd"))


def fd_rdev(pid: int, fd: int) -> int | None:
    """The device number an fd points at if it is a character device, else None."""
    try:
        st = os.stat(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return None
    return st.st_rdev if stat.S_ISCHR(st.st_mode) else None


def fd_target(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return "?"


def fd_flags(pid: int, fd: int) -> int:
    """The fd's open flags (O_* and O_CLOEXEC) from fdinfo."""
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    return 0


def pts_path(dev: int) -> str | None:
    """/dev/pts/N for a Unix98 pty slave device number."""
    major, minor = os.major(dev), os.minor(dev)
    if 136 <= major <= 143:
        return f"/dev/pts/{(major - 136) * 256 + minor}"
    return None


def tty_name(dev: int | None) -> str:
    if dev is None:
        return "no tty"
    path = pts_path(dev)
    if path:
        return path[len("/dev/"):]
    return f"tty {os.major(dev)}:{os.minor(dev)}"


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def all_stats() -> list[Stat]:
    stats = []
    for pid in all_pids():
        try:
            stats.append(read_stat(pid))
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
    return stats


def group_members(pgid: int, stats: list[Stat] | None = None) -> list[Stat]:
    return [s for s in (stats or all_stats()) if s.pgid == pgid]


def is_orphaned_group(pgid: int, sid: int, stats: list[Stat] | None = None) -> bool:
    """POSIX: a group is orphaned when no member has a parent in another group of the same session.

    The kernel discards job-control stops (SIGTSTP/SIGTTIN/SIGTTOU at default action) sent to an
    orphaned group, so nobody should wait for such a target to stop.
    """
    stats = stats or all_stats()
    by_pid = {s.pid: s for s in stats}
    for member in group_members(pgid, stats):
        parent = by_pid.get(member.ppid)
        if parent and parent.pgid != pgid and parent.sid == sid:
            return False
    return True


def exe_header(pid: int) -> bytes:
    with open(f"/proc/{pid}/exe", "rb") as f:
        return f.read(20)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def maps(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, name) for each mapping."""
    result = []
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            result.append((start, end, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    return result
