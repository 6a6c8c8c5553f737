"""Test victim: forks (and vforks, via subprocess) in a loop while a thread echoes stdin."""

import os
import subprocess
import sys
import threading
import time


def say(text: str) -> None:
    os.write(1, (text + "\n").encode())


def echo() -> None:
    for line in sys.stdin:
        say("got: " + line.strip())


threading.Thread(target=echo, daemon=True).start()
say(f"ready {os.getpid()}")
while True:
    try:
        if "--spawn" in sys.argv:
            subprocess.run(["true"], check=True)  # posix_spawn / vfork underneath
        else:
            child = os.fork()
            if child == 0:
                os._exit(0)
            os.waitpid(child, 0)
    except Exception as e:  # what a harmed target would show
        say(f"FORK FAILED {e!r}")
    time.sleep(0.001)  # moments without a child, when a move is allowed
