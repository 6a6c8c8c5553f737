"""Test victim: echoes lines, reports signals and window sizes, optionally with busy threads."""

import fcntl
import os
import signal
import struct
import sys
import termios
import threading
import time


def say(text: str) -> None:
    os.write(1, (text + "\n").encode())


def on_winch(*_: object) -> None:
    for fd in (1, 0, 2):  # whichever is the terminal (stdout is a pipe in a pipeline)
        try:
            rows, cols = struct.unpack("hhhh", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))[:2]
        except OSError:
            continue
        say(f"winch {rows}x{cols}")
        return


def on_int(*_: object) -> None:
    say("sigint")


def on_tstp(*_: object) -> None:
    say("sigtstp")


def on_hup(*_: object) -> None:
    try:
        say("sighup")
    except OSError:  # its terminal has hung up: end as a program that handles SIGHUP usually does
        os._exit(128 + signal.SIGHUP)


def outlive_the_terminal() -> None:
    """Its terminal has ended (end of file, or EIO once the master is closed): stay, so that only a
    signal ends it and a test can tell a hangup (SIGHUP) from a program that merely saw its input end."""
    try:
        say("eof")
    except OSError:
        pass
    while True:
        signal.pause()


def install_allow_all_seccomp_filter() -> None:
    """Seccomp mode 2 with a filter that allows everything: enough to show up as "Seccomp: 2"."""
    import ctypes

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    allow = (SockFilter * 1)(SockFilter(0x06, 0, 0, 0x7FFF0000))  # BPF_RET|BPF_K, SECCOMP_RET_ALLOW
    prog = SockFprog(1, allow)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        raise OSError(ctypes.get_errno(), "seccomp")


def spin() -> None:
    while True:
        sum(range(1000))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--name" in args:  # what ps and the picker show as its name (prctl PR_SET_NAME)
        import ctypes

        ctypes.CDLL(None).prctl(15, args[args.index("--name") + 1].encode()[:15], 0, 0, 0)
    signal.signal(signal.SIGWINCH, on_winch)
    if "--catch-hup" in args:
        signal.signal(signal.SIGHUP, on_hup)
    if "--catch-int" in args:
        signal.signal(signal.SIGINT, on_int)
    if "--catch-tstp" in args:
        signal.signal(signal.SIGTSTP, on_tstp)
    if "--slow-tstp" in args:  # like vim: tidy up for a while, then really stop
        signal.signal(signal.SIGTSTP, lambda *_: (time.sleep(0.3), os.kill(os.getpid(), signal.SIGSTOP)))
    usr1 = [0]
    if "--count-usr1" in args:
        signal.signal(signal.SIGUSR1, lambda *_: usr1.__setitem__(0, usr1[0] + 1))
    if "--seccomp" in args:
        install_allow_all_seccomp_filter()
    for _ in range(int(args[args.index("--threads") + 1]) if "--threads" in args else 0):
        threading.Thread(target=spin, daemon=True).start()
    if "--sleep" in args:
        say(f"ready {os.getpid()}")
        while True:
            time.sleep(0.7)
            say("woke")
    say(f"ready {os.getpid()}")
    while True:
        try:
            line = sys.stdin.readline()
        except OSError:
            if "--outlive-terminal" not in args:
                raise
            line = ""
        if not line:
            if "--outlive-terminal" in args:
                outlive_the_terminal()
            say("eof")
            break
        say("got: " + line.strip() + (f" usr1={usr1[0]}" if "--count-usr1" in args else ""))
