"""Test victim: appends "PID N" to a log file every 20 ms (a second copy of it would show up there
with its own pid) and echoes lines from its terminal as "got: LINE"."""

import os
import select
import sys

log = open(sys.argv[1], "a", buffering=1)  # noqa: SIM115
os.write(1, f"ready {os.getpid()}\n".encode())
n = 0
while True:
    n += 1
    log.write(f"{os.getpid()} {n}\n")
    if select.select([0], [], [], 0.02)[0]:
        line = os.read(0, 4096)
        if not line:
            break
        os.write(1, b"got: " + line.strip() + b"\n")
