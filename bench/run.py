"""Side-by-side numbers: reptyr-tmux against reptyr, same machine, same run. Prints medians and ratios.

    python bench/run.py [--reps N]        (needs: apt-get install reptyr tmux; run from the venv)

1. attach latency, target a shell's foreground job: command start -> target's /proc tty is the new one
2. the same, target a session leader (reptyr waits 1 s for a stop that never comes there)
   each as `reptyr-tmux attach` vs `reptyr` in a pty, and `reptyr-tmux adopt` vs `reptyr` in a new
   tmux window (pane creation included)
3. lingering memory of what stays behind per adopted process: our holder vs reptyr's relay
4. picker listing time with 2,000 extra processes running
"""

from __future__ import annotations

import argparse
import os
import pty
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ECHO, Spawner  # noqa: E402  (the tests' real-pty victims)

from reptyr_tmux import proc  # noqa: E402
from reptyr_tmux.launch import python_argv  # noqa: E402

OURS = python_argv("reptyr_tmux")  # how the key binding and the menu start us
SOCKET = "reptyr-bench"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def wait_moved(pid: int, old_tty: int, limit: float = 10.0) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.read_stat(pid).tty_nr != old_tty:
            return time.monotonic()
        time.sleep(0.0005)
    raise RuntimeError(f"process {pid} never moved")


def victim(spawner: Spawner, kind: str):
    return spawner.in_shell(" ".join(ECHO)) if kind == "job" else spawner.on_pty(ECHO)


def time_in_pty(argv: list[str], kind: str) -> float:
    """Run argv (attach-style: relays in its own terminal) on a fresh pty; seconds until moved."""
    spawner = Spawner()
    try:
        target = victim(spawner, kind)
        old = target.stat().tty_nr
        start = time.monotonic()
        pid, master = pty.fork()
        if pid == 0:
            os.execvp(argv[0], [*argv, str(target.pid)])
        moved = wait_moved(target.pid, old)
        os.kill(target.pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(master)
        return moved - start
    finally:
        spawner.cleanup()


def time_in_tmux(argv: list[str], kind: str, new_window: bool) -> float:
    spawner = Spawner()
    try:
        target = victim(spawner, kind)
        old = target.stat().tty_nr
        start = time.monotonic()
        if new_window:  # reptyr: a new window that runs it
            tmux("new-window", "-t", "bench", *argv, str(target.pid))
        else:
            subprocess.Popen([*argv, "-L", SOCKET, "-t", "bench", "--mode", "attach", str(target.pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moved = wait_moved(target.pid, old)
        os.kill(target.pid, signal.SIGKILL)
        return moved - start
    finally:
        spawner.cleanup()


def rss_kb(pid: int) -> int:
    return int(proc.read_status(pid)["VmRSS"].split()[0])


def lingering_memory() -> tuple[int, int]:
    """RSS of what stays alive beside each adopted process: our holder, reptyr's relay."""
    spawner = Spawner()
    try:
        ours_target, theirs_target = spawner.on_pty(ECHO), spawner.on_pty(ECHO)
        subprocess.run([*OURS, "adopt", "-L", SOCKET, "-t", "bench", str(ours_target.pid)], check=True,
                       capture_output=True)
        holder = int(tmux("display-message", "-p", "-t", "bench:{end}", "#{pane_pid}").strip())
        old = theirs_target.stat().tty_nr
        tmux("new-window", "-t", "bench", "reptyr", str(theirs_target.pid))
        wait_moved(theirs_target.pid, old)
        relay = int(tmux("display-message", "-p", "-t", "bench:{end}", "#{pane_pid}").strip())
        time.sleep(0.5)
        return rss_kb(holder), rss_kb(relay)
    finally:
        spawner.cleanup()


def picker_time(extra: int = 2000) -> float:
    sleepers = [subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL) for _ in range(extra)]
    try:
        times = []
        for _ in range(5):
            start = time.monotonic()
            subprocess.run([*OURS, "pick", "-L", SOCKET, "--list"], capture_output=True, check=True)
            times.append(time.monotonic() - start)
        return statistics.median(times)
    finally:
        for s in sleepers:
            s.kill()
        for s in sleepers:
            s.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("reptyr"):
        print("reptyr is not installed: apt-get install reptyr (benchmark only)", file=sys.stderr)
        return 2
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40")
    try:
        print(f"{'measurement':58} {'ours':>9} {'reptyr':>9} {'ours/reptyr':>11}")
        for kind, label in (("job", "shell's foreground job"), ("leader", "session leader")):
            rows = (
                (f"attach latency, {label} (ms)", lambda k=kind: time_in_pty([*OURS, "attach"], k),
                 lambda k=kind: time_in_pty(["reptyr"], k)),
                (f"adopt into a tmux window, {label} (ms)",
                 lambda k=kind: time_in_tmux([*OURS, "adopt"], k, False),
                 lambda k=kind: time_in_tmux(["reptyr"], k, True)),
            )
            for name, ours, theirs in rows:
                a = statistics.median(ours() for _ in range(args.reps)) * 1000
                b = statistics.median(theirs() for _ in range(args.reps)) * 1000
                print(f"{name:58} {a:9.1f} {b:9.1f} {a / b:11.2f}")
        holder, relay = lingering_memory()
        print(f"{'lingering RSS per adopted process (kB)':58} {holder:9d} {relay:9d} {holder / relay:11.3f}")
        print(f"{'picker listing with 2,000 extra processes (ms)':58} {picker_time() * 1000:9.1f}")
    finally:
        tmux("kill-server")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
