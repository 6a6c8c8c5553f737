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


def spin() -> None:
    while True:
        sum(range(1000))


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--name" in args:  # what ps and the picker show as its name (prctl PR_SET_NAME)
        import ctypes

        ctypes.CDLL(None).prctl(15, args[args.index("--name") + 1].encode()[:15], 0, 0, 0)
    signal.signal(signal.SIGWINCH, on_winch)
    if "--catch-int" in args:
        signal.signal(signal.SIGINT, on_int)
    if "--catch-tstp" in args:
        signal.signal(signal.SIGTSTP, on_tstp)
    for _ in range(int(args[args.index("--threads") + 1]) if "--threads" in args else 0):
        threading.Thread(target=spin, daemon=True).start()
    if "--sleep" in args:
        say(f"ready {os.getpid()}")
        while True:
            time.sleep(0.7)
            say("woke")
    say(f"ready {os.getpid()}")
    while True:
        line = sys.stdin.readline()
        if not line:
            say("eof")
            break
        say("got: " + line.strip())
