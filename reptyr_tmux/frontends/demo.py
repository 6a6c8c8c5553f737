"""`reptyr-tmux demo`: a forgotten job of a shell on a scratch terminal is adopted into a tmux window.

The job runs in an interactive bash on a pty of its own (the stand-in for a plain ssh session); we adopt
it — with its shell, the session move — into session `reptyr-demo` of a private tmux server (socket
`reptyr-demo`), close the old terminal, prove the job answers there, and leave it running for the user
to look at.
"""

from __future__ import annotations

import argparse
import os
import select
import shlex
import shutil
import subprocess
import sys
import time

from reptyr_tmux import proc
from reptyr_tmux.errors import ReptyrError

SOCKET = SESSION = "reptyr-demo"

# The long job someone started in a plain ssh session and wishes were in tmux.
FORGOTTEN_JOB = r"""
import os, select, sys, time
n = 0
while True:
    n += 1
    print(f"working... step {n} (pid {os.getpid()}, terminal {os.ttyname(1)}); type here and press Enter",
          flush=True)
    if select.select([0], [], [], 2.0)[0]:
        line = sys.stdin.readline()
        if not line:
            break
        print("you said:", line.strip(), flush=True)
"""


def start_forgotten_job() -> tuple[int, int, int]:
    """The job, in a bash on a scratch pty; returns (job pid, shell pid, master fd). Neither is our
    child for long: they outlive us."""
    master, slave = os.openpty()
    env = {**os.environ, "PS1": "$ ", "HISTFILE": "/dev/null", "FORGOTTEN_JOB": FORGOTTEN_JOB}
    shell = subprocess.Popen(["bash", "--norc", "--noprofile", "-i"], stdin=slave, stdout=slave,
                             stderr=slave, start_new_session=True, preexec_fn=_take_stdin_as_ctty,
                             close_fds=True, env=env)
    os.close(slave)
    _read_until(master, b"$ ")
    os.write(master, f'{shlex.quote(sys.executable)} -c "$FORGOTTEN_JOB"\n'.encode())
    _read_until(master, b"working...")
    job = next(s.pid for s in proc.all_stats() if s.ppid == shell.pid and s.state != "Z")
    return job, shell.pid, master


def _read_until(master: int, text: bytes, within_s: float = 5.0) -> None:
    seen, deadline = b"", time.monotonic() + within_s
    while text not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            seen += os.read(master, 4096)


def _take_stdin_as_ctty() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="reptyr-tmux demo", description="Start a throwaway job on a scratch terminal (a stand-in for "
        "a plain ssh session), adopt it into a private tmux server, type a line into it there and show "
        "the answer. The job is left running for you to look at.")
    parser.add_argument("-L", dest="socket", metavar="NAME", default=SOCKET,
                        help=f"the private tmux server's socket name (default {SOCKET})")
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        raise ReptyrError("tmux is not installed (apt-get install tmux)")
    import libtmux

    from reptyr_tmux.mux.adopt import adopt
    from reptyr_tmux.mux.tmux import Server

    server = libtmux.Server(socket_name=args.socket)
    session = server.new_session(session_name=SESSION, kill_session=True, attach=False, x=110, y=30)
    scratch_window = session.windows[0].window_id
    pid, shell, scratch = start_forgotten_job()
    print(f"1. started a job, pid {pid}, in a bash (pid {shell}) on terminal "
          f"{proc.tty_name(proc.read_stat(pid).tty_dev)} (a stand-in for your ssh session)")
    done = adopt(pid, Server(socket_name=args.socket), target=SESSION)
    # The session's first window (a shell) has served its purpose: with the job's window alone in
    # it, ending the job ends the session and the server, and the viewer is back where they were.
    server.cmd("kill-window", "-t", scratch_window)
    print(f"2. adopted it into tmux in {done.took_ms:.0f} ms, {done.mode} mode: it and its shell now run on "
          f"{done.pane.pane_tty}, the pane's own terminal (pane {done.pane.pane_id}, no relay process)")
    os.close(scratch)
    alive = all(proc.read_stat(p).state not in "ZX" for p in (pid, shell))
    print(f"3. closed its old terminal (as a dropped ssh connection would); job and shell still running: "
          f"{alive}")
    pane = server.panes.get(pane_id=done.pane.pane_id)
    pane.send_keys("hello from tmux", enter=True)
    answer = _answer(pane)
    print(f"4. typed a line into the pane; it answered: {answer or '(nothing yet)'}")
    print(f"\nLook at it:  tmux -L {args.socket} attach -t {SESSION}\n"
          f"  C-c there ends the job and leaves you at its shell's prompt; `exit` ends the session and this\n"
          f"  demo's tmux server; detach with C-b d.\n"
          f"Stop it from here:  tmux -L {args.socket} kill-server")
    return 0 if answer else 1


def _answer(pane, within_s: float = 5.0) -> str:
    """The job's answer to the typed line, once it shows in the pane."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        answer = [line for line in pane.capture_pane() if line.startswith("you said")]
        if answer:
            return answer[-1]
        time.sleep(0.05)
    return ""
