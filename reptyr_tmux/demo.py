"""`reptyr-tmux demo`: show the engine moving a real program between two real terminals."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

from reptyr_tmux import proc

# A stand-in for the long job someone started in a plain ssh session.
FORGOTTEN_JOB = r"""
import sys, time
print("job: started", flush=True)
for line in sys.stdin:
    print("job: you said", line.strip(), flush=True)
"""


def _read_for(fd: int, seconds: float) -> str:
    out, deadline = b"", time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        try:
            out += os.read(fd, 4096)
        except OSError:
            break
    return out.decode(errors="replace")


def _where(pid: int) -> str:
    stat = proc.read_stat(pid)
    return f"terminal {proc.tty_name(stat.tty_dev)}, session {stat.sid}"


def run_demo(argv: list[str]) -> int:
    from reptyr_tmux.attach import attach

    pid, old_master = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", FORGOTTEN_JOB])
    _read_for(old_master, 1.0)
    print(f"1. started a job, pid {pid}, on a scratch terminal ({_where(pid)})")
    new_master, new_slave = os.openpty()
    started = time.monotonic()
    try:
        attach(pid, os.ttyname(new_slave))
    finally:
        os.close(new_slave)
    took = (time.monotonic() - started) * 1000
    print(f"2. moved it in {took:.1f} ms: now {_where(pid)}")
    os.close(old_master)
    print("3. closed its old terminal; it is still alive:", proc.read_stat(pid).state != "Z")
    os.write(new_master, b"hello from the new terminal\n")
    reply = [line for line in _read_for(new_master, 1.0).splitlines() if line.startswith("job:")]
    print("4. typed a line on the new terminal, it answered:", reply[-1] if reply else "(nothing)")
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)
    os.close(new_master)
    print("done: try it on your own jobs with 'reptyr-tmux attach PID' from another terminal")
    return 0 if reply else 1
