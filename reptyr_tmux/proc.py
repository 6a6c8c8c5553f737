"""Read-only facts about processes, from /proc. Nothing here changes a process."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

PF_KTHREAD = 0x00200000
DEV_TTY = os.makedev(5, 0)
DEV_CONSOLE = os.makedev(5, 1)
DEV_PTMX = os.makedev(5, 2)
DEVPTS_SUPER_MAGIC = 0x1CD1
NO_TTY_INDEX_ENV = "REPTYR_TMUX_NO_TTY_INDEX"  # test-only: behave as on a kernel without tty-index


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
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    # comm may hold spaces and parentheses: it ends at the *last* ')'. Bytes up to field 22 only.
    end = raw.rindex(b")")
    rest = raw[end + 2 :].split(None, 20)
    return Stat(
        pid=pid, comm=raw[raw.index(b"(") + 1 : end].decode("utf-8", "replace"), state=rest[0].decode(),
        ppid=int(rest[1]), pgid=int(rest[2]), sid=int(rest[3]), tty_nr=int(rest[4]), tpgid=int(rest[5]),
        flags=int(rest[6]), starttime=int(rest[19]),
    )


def read_status(pid: int) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def resident_kb(pid: int) -> int:
    """PID's resident set in kB, counted from its page tables (smaps_rollup's Rss). Not VmRSS: kernels
    before 6.2 add a process's own page faults to it in batches of 64, so a tiny program that has made
    fewer shows less than it holds (the pane holder on arm64's 6.1: VmRSS 4 kB, Rss 8 kB)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1])
    raise ValueError(f"no Rss in /proc/{pid}/smaps_rollup")


def signal_mask(status: dict[str, str], key: str) -> int:
    """SigIgn / SigCgt / SigBlk as an int (bit N-1 is signal N)."""
    return int(status.get(key, "0"), 16)


def pending_signals(status: dict[str, str]) -> int:
    """Signals waiting for the process: its main thread's own and the whole group's (SigPnd | ShdPnd)."""
    return signal_mask(status, "SigPnd") | signal_mask(status, "ShdPnd")


def has_signal(mask: int, signum: int) -> bool:
    return bool(mask >> (signum - 1) & 1)


def signal_pending(pid: int, signum: int) -> bool:
    """Whether `signum` waits to be taken by `pid` (OSError once it is gone)."""
    return has_signal(pending_signals(read_status(pid)), signum)


def cpu_time_ns(pid: int) -> int | None:
    """How long `pid` has run on a CPU (/proc/PID/schedstat, brought up to date when it sleeps and at
    each scheduler tick), or None (gone, or a kernel without it)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def open_fds(pid: int) -> list[int]:
    return sorted(int(name) for name in os.listdir(f"/proc/{pid}/fd"))


def fd_links(pid: int) -> dict[int, str]:
    """What each open fd of `pid` points at, leaving out fds closed while we read (a busy server opens
    and closes them all the time: one gone must not hide the rest); {} for a process gone or not ours."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}
    links = {}
    for name in names:
        try:
            links[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
    return links


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


def console_devices() -> set[int]:
    """The terminals /dev/console writes to now (/sys/class/tty/console/active; tty0 is the current
    virtual terminal): a process whose controlling terminal is one of them has the console as its own."""
    devices = set()
    for name in _sys_tty("console", "active").split():
        if name == "tty0":
            name = _sys_tty("tty0", "active").strip() or name
        major, _, minor = _sys_tty(name, "dev").strip().partition(":")
        if major.isdigit() and minor.isdigit():
            devices.add(os.makedev(int(major), int(minor)))
    return devices


def _sys_tty(name: str, field: str) -> str:
    try:
        with open(f"/sys/class/tty/{os.path.basename(name)}/{field}") as f:
            return f.read()
    except OSError:
        return ""


def pts_index(dev: int) -> int | None:
    """N of /dev/pts/N for a Unix98 pty slave device number, else None."""
    major, minor = os.major(dev), os.minor(dev)
    return (major - 136) * 256 + minor if 136 <= major <= 143 else None


def pts_path(dev: int) -> str | None:
    """/dev/pts/N for a Unix98 pty slave device number."""
    index = pts_index(dev)
    return None if index is None else f"/dev/pts/{index}"


def tty_name(dev: int | None) -> str:
    if dev is None:
        return "no tty"
    path = pts_path(dev)
    if path:
        return path[len("/dev/"):]
    return f"tty {os.major(dev)}:{os.minor(dev)}"


class Tty(NamedTuple):
    """One terminal, told apart from its namesakes. Pty numbers (st_rdev, stat's tty_nr, fdinfo's
    tty-index) repeat in every devpts instance — each container, each `mount -t devpts -o newinstance`
    — so a pty is named by its instance (the st_dev of its devpts mount) as well. Other terminals'
    device numbers are unique machine-wide: their instance is 0."""

    instance: int
    rdev: int

    @property
    def index(self) -> int | None:
        return pts_index(self.rdev)


def tty_of_stat(st: os.stat_result) -> Tty | None:
    if not stat.S_ISCHR(st.st_mode):
        return None
    return Tty(st.st_dev if pts_index(st.st_rdev) is not None else 0, st.st_rdev)


def tty_of_path(path: str) -> Tty | None:
    """The terminal a path names in our own view of the file system, or None."""
    try:
        return tty_of_stat(os.stat(path))
    except OSError:
        return None


def tty_of_fd(pid: int, fd: int) -> Tty | None:
    """The terminal (or other character device) an fd of `pid` is open on, or None."""
    return tty_of_path(f"/proc/{pid}/fd/{fd}")


def fds_on(pid: int, devices: set[int]) -> dict[int, Tty]:
    """The fds of `pid` open on a terminal with one of these device numbers (namesakes from other
    devpts instances included: the caller tells them apart)."""
    found: dict[int, Tty] = {}
    try:
        names = open_fds(pid)
    except OSError:
        return found
    for fd in names:
        tty = tty_of_fd(pid, fd)
        if tty is not None and tty.rdev in devices:
            found[fd] = tty
    return found


def ctty_of(pid: int, stat: Stat) -> Tty | None:
    """The controlling terminal of `pid`, when it can be known: /proc gives only its device number, so
    its instance is that of the fds open on that number — if there are any and they all agree."""
    if stat.tty_dev is None:
        return None
    seen = set(fds_on(pid, {stat.tty_dev}).values())
    return seen.pop() if len(seen) == 1 else None


def session_tty(stat: Stat, stats: list[Stat]) -> Tty | None:
    """ctty_of the process, or failing that of its session leader: a session has one controlling
    terminal, and the leader (a shell, sshd's child) usually keeps it open."""
    tty = ctty_of(stat.pid, stat)
    if tty is None and stat.sid != stat.pid:
        leader = next((s for s in stats if s.pid == stat.sid and s.tty_dev == stat.tty_dev), None)
        tty = ctty_of(leader.pid, leader) if leader else None
    return tty


def tty_index(pid: int, fd: int) -> int | None:
    """fdinfo's tty-index of a pty master fd: which pty of its devpts instance it drives."""
    if os.environ.get(NO_TTY_INDEX_ENV):
        return None
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("tty-index:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def master_tty(pid: int, fd: int) -> Tty | None:
    """The pty whose master `pid` holds at `fd`, read without touching `pid`; None if unknown.

    The instance is the one the kernel picked when the master was opened: the devpts the ptmx node
    lives in (/dev/pts/ptmx, or a bind mount of it), else the devpts mounted at "pts" beside it
    (/dev/ptmx), looked up in the holder's own view. A mount stacked over that "pts" since then
    fools the second rule: whoever relies on the answer must confirm it (steal.py does)."""
    index = tty_index(pid, fd)
    path = f"/proc/{pid}/fd/{fd}"
    try:
        node = os.stat(path)
    except OSError:
        return None
    if index is None or node.st_rdev != DEV_PTMX:
        return None
    instance = node.st_dev if _fs_type(path) == DEVPTS_SUPER_MAGIC else _pts_beside(pid, fd, node)
    return None if instance is None else Tty(instance, pts_rdev(index))


def _pts_beside(pid: int, fd: int, ptmx: os.stat_result) -> int | None:
    """st_dev of the devpts mounted at "pts" in the directory of `pid`'s ptmx node `ptmx`.

    The fd's link is its path as we see it when it lies in our mount tree (a chroot, say), else as
    the holder's mount namespace sees it: then it is looked up under /proc/PID/root. Whichever it
    is, the path must lead to that very ptmx node, or the answer is unknown."""
    link = fd_target(pid, fd)
    if not link.startswith("/"):
        return None
    view = "" if same_namespace(pid, "mnt") else f"/proc/{pid}/root"
    try:
        named = os.stat(view + link)
        pts = os.path.join(view + os.path.dirname(link), "pts")
        beside = os.stat(pts, follow_symlinks=False)  # the kernel follows mounts there, not links
    except OSError:
        return None
    if (named.st_dev, named.st_ino) != (ptmx.st_dev, ptmx.st_ino) or not stat.S_ISDIR(beside.st_mode):
        return None
    return beside.st_dev if _fs_type(pts) == DEVPTS_SUPER_MAGIC else None


def pts_rdev(index: int) -> int:
    return os.makedev(136 + index // 256, index % 256)


def _fs_type(path: str) -> int | None:
    """statfs's f_type: which kind of file system `path` lies on (follows the final link)."""
    import ctypes  # only steal mode asks: the picker does not pay for the import

    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(256)  # struct statfs; f_type (a long) comes first
    if libc.statfs(os.fsencode(path), buffer) != 0:
        return None
    return ctypes.c_long.from_buffer(buffer).value


def same_namespace(pid: int, kind: str) -> bool:
    """Whether `pid` shares our namespace of this kind ("pid", "mnt"...): /proc/PID/ns links compare
    equal (device and inode) exactly when the namespace is the same."""
    theirs, ours = os.stat(f"/proc/{pid}/ns/{kind}"), os.stat(f"/proc/self/ns/{kind}")
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


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
