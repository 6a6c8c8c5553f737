"""Test victim: terminal fds opened with particular flags. Its stdin is signal-driven (O_ASYNC,
F_SETOWN to itself): it reads only when SIGIO says input is there. fd 3 is a separately opened,
non-blocking /dev/tty; with --console, fd 4 is a write-only /dev/console."""

import fcntl
import os
import signal
import sys

signal.signal(signal.SIGIO, lambda *_: None)
fcntl.fcntl(0, fcntl.F_SETOWN, os.getpid())
fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_ASYNC | os.O_NONBLOCK)
os.dup2(os.open("/dev/tty", os.O_RDWR | os.O_NONBLOCK), 3)
if "--console" in sys.argv:
    os.dup2(os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY), 4)
os.write(1, f"ready {os.getpid()}\n".encode())
while True:
    signal.pause()  # only SIGIO wakes it
    try:
        data = os.read(0, 4096)
    except BlockingIOError:
        continue
    os.write(1, b"sigio got: " + data.strip() + b"\n")
