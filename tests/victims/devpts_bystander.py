"""A bystander in a devpts instance of its own (a stand-in for a container's terminals).

Run as `unshare -m --propagation private python3 devpts_bystander.py`: it mounts a new devpts on
/dev/pts (only in its own mount namespace; it refuses to run in its parent's) and holds the masters
of ptys there whose numbers the test picks to collide with the host's. On each pty a child sits as
session leader with that pty as its controlling terminal, named like reptyr-tmux's pane holder
(fd 0 on the pty), echoing "got: LINE" for every line. Commands on stdin, one answer line each:
  hold N [ptmx|pts-ptmx]   get pty N here (through /dev/ptmx or /dev/pts/ptmx) with a child on it
  ping N                   write through master N and read the child's answer back: "pong N"
  stack                    mount yet another devpts over /dev/pts (masters held stay on the old one)
"""

import fcntl
import os
import select
import subprocess
import sys
import time

TIOCSPTLCK, TIOCGPTN = 0x40045431, 0x80045430
CHILD_NAME = b"reptyr-holder"


def own_namespace() -> bool:
    return os.stat("/proc/self/ns/mnt").st_ino != os.stat(f"/proc/{os.getppid()}/ns/mnt").st_ino


def mount_devpts() -> None:
    subprocess.run(["mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=620", "devpts",
                    "/dev/pts"], check=True)


def open_pty(via: str) -> tuple[int, int]:
    """(master, index) of a fresh pty of our instance."""
    if via == "ptmx":
        master, slave = os.openpty()  # /dev/ptmx: the kernel takes the devpts at "pts" beside it
        index = int(os.ttyname(slave).rsplit("/", 1)[1])
        os.close(slave)
        return master, index
    master = os.open("/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY)
    fcntl.ioctl(master, TIOCSPTLCK, b"\0\0\0\0")
    return master, int.from_bytes(fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"), "little")


def hold(index: int, via: str) -> int:
    """Open ptys until number `index` comes up (devpts hands out the lowest free one), keep that."""
    spare = []
    while True:
        master, got = open_pty(via)
        if got == index:
            break
        spare.append(master)
        if got > index:
            raise SystemExit(f"pty {index} is taken here already")
    for fd in spare:
        os.close(fd)
    child = os.fork()
    if child == 0:
        sit_on(f"/dev/pts/{index}")
    masters[index] = master
    return child


def sit_on(path: str) -> None:
    import ctypes
    import termios

    os.setsid()
    slave = os.open(path, os.O_RDWR)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.closerange(3, 1 << 16)
    ctypes.CDLL(None).prctl(15, CHILD_NAME, 0, 0, 0)  # PR_SET_NAME
    while True:
        line = os.read(0, 4096)
        if not line:
            os._exit(0)
        os.write(1, b"got: " + line.strip() + b"\n")


def ping(index: int) -> bool:
    master = masters[index]
    os.write(master, b"ping\n")
    seen, deadline = b"", time.monotonic() + 5
    while b"got: ping" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 4096)
    return b"got: ping" in seen


if __name__ == "__main__":
    if not own_namespace():
        raise SystemExit("run me under unshare -m: I mount over /dev/pts")
    mount_devpts()
    masters: dict[int, int] = {}
    print("ready", os.stat("/dev/pts").st_dev, flush=True)
    for request in sys.stdin:
        verb, *args = request.split()
        if verb == "hold":
            print("held", args[0], hold(int(args[0]), args[1] if len(args) > 1 else "ptmx"), flush=True)
        elif verb == "ping":
            print("pong" if ping(int(args[0])) else "dead", args[0], flush=True)
        elif verb == "stack":
            mount_devpts()
            print("stacked", os.stat("/dev/pts").st_dev, flush=True)
