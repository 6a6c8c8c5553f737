"""Test victim: fd 3 alternates between /dev/tty and a log file, as a program that reopens its outputs
does. Lines meant for the log say LOG; they must never reach a terminal."""

import os
import sys
import time

log = os.dup2(os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), 10)  # clear of fd 3
os.write(1, f"ready {os.getpid()}\n".encode())
count = 0
while True:
    os.dup2(log, 3)
    for _ in range(3):
        count += 1
        os.write(3, f"LOG {count}\n".encode())
        time.sleep(0.0002)
    tty = os.open("/dev/tty", os.O_RDWR)
    os.dup2(tty, 3)
    os.close(tty)
    time.sleep(0.0005)
