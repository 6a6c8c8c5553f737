"""Throughput writer for bench/run.py: prints "ready", waits for SIGUSR1, then writes MB mebibytes of
printable 100-byte lines to stdout in 64 KiB writes, and writes the elapsed seconds to RESULT.

    python bench/writer.py RESULT [MB]          (MB defaults to 50)
"""

import os
import signal
import sys
import time

CHUNK = 64 * 1024
LINES = 16384  # 16384 lines of 100 bytes = 25 chunks exactly


def block() -> bytes:
    text = "".join(chr(33 + i % 94) for i in range(200))
    return "".join(f"{n:07d} {text[n % 94:n % 94 + 91]}\n" for n in range(LINES)).encode()


def write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def main() -> int:
    result, mb = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 50
    data = memoryview(block())
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    print("ready", flush=True)
    signal.sigwait({signal.SIGUSR1})
    start = time.monotonic()
    for i in range(mb * 1024 * 1024 // CHUNK):
        write_all(1, chunks[i % len(chunks)])
    elapsed = time.monotonic() - start
    with open(result + ".tmp", "w") as f:
        f.write(f"{elapsed}\n")
    os.rename(result + ".tmp", result)  # appears whole
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
