"""Side-by-side numbers: reptyr-tmux against reptyr, same machine, same run. Prints medians and ratios.

    python bench/run.py [--reps N]        (needs: apt-get install reptyr tmux; run from the venv)

1. attach latency, target a shell's foreground job: command start -> target's /proc tty is the new one
2. the same, target a session leader (reptyr waits 1 s for a stop that never comes there)
   each as `reptyr-tmux attach` vs `reptyr` in a pty, and `reptyr-tmux adopt` vs `reptyr` in a new
   tmux window (pane creation included); adopt runs as a menu item runs it ($TMUX names the server)
3. lingering memory of what stays behind per adopted process: our holder vs reptyr's relay
4. picker listing time with 2,000 extra processes running
5. output throughput (bench/writer.py: 50 MiB of 100-byte lines in 64 KiB writes, timed by the writer
   from SIGUSR1 to its last write): the writer started directly in a tmux window (the ceiling), on a
   pty then `adopt --mode attach`, and then `reptyr PID` in a window; every window 120x40
8. the menu: prefix + A typed into a real attached client, then the item's key; key -> the chosen
   program's stdin is the pane's pty (the picker waits with everything loaded), against reptyr PID
   started in a new window: a session leader, a shell's job alone (@reptyr-mode attach) and with its
   session (auto: the session move)
7. session move, target a shell's foreground job (its whole session comes along): command start ->
   the job's stdin is the new terminal, `adopt --mode session` against `reptyr PID` in a new window,
   and against `reptyr -T PID` (start -> reptyr holds the session's pty master)
6. steal mode: the writer runs in bash on a pty whose master an sshd-like process holds; `adopt --mode
   steal` against `reptyr -T` in a window: throughput, CPU of the relay (the pane's first process:
   our reptyr-relay, or reptyr itself) per MiB written, and its RSS afterwards
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ECHO, VICTIMS, Client, Spawner, Tmux, wait_for  # noqa: E402  (the tests' real parts)

from reptyr_tmux import proc  # noqa: E402
from reptyr_tmux.engine.steal import find_session  # noqa: E402
from reptyr_tmux.launch import python_argv  # noqa: E402

OURS = python_argv("reptyr_tmux")  # how the key binding and the menu start us
SOCKET = "reptyr-bench"
WRITER = [sys.executable, str(Path(__file__).resolve().parent / "writer.py")]
MIB = 50  # written per throughput run
SIZE = ("120", "40")  # every window: the session's size (no client is attached, so it never changes)


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True).stdout


def as_the_menu() -> dict[str, str]:
    """The environment a menu item's command runs with: $TMUX names the server (no -L, and no tmux
    client is needed to learn the server's pid)."""
    return {**os.environ, "TMUX": tmux("display-message", "-p", "#{socket_path},#{pid},0").strip()}


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
        menu = as_the_menu()
        start = time.monotonic()
        if new_window:  # reptyr: a new window that runs it
            tmux("new-window", "-t", "bench", *argv, str(target.pid))
        else:
            subprocess.Popen([*argv, "-t", "bench", "--mode", "attach", str(target.pid)], env=menu,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        moved = wait_moved(target.pid, old)
        os.kill(target.pid, signal.SIGKILL)
        return moved - start
    finally:
        spawner.cleanup()


def time_session_move(how: str) -> float:
    """Seconds from start until the job's session is on its new terminal (see 7 above)."""
    spawner = Spawner()
    try:
        target = spawner.in_shell(" ".join(ECHO))
        old = os.readlink(f"/proc/{target.pid}/fd/0")
        menu = as_the_menu()
        start = time.monotonic()
        if how == "ours":
            subprocess.Popen([*OURS, "adopt", "-t", "bench", "--mode", "session", str(target.pid)], env=menu,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            tmux("new-window", "-t", "bench", "reptyr", *(["-T"] if how == "-T" else []), str(target.pid))
        index = int(old.rsplit("/", 1)[1])
        done = (lambda: _holds_master("reptyr", index)) if how == "-T" else \
            (lambda: os.readlink(f"/proc/{target.pid}/fd/0") != old)
        moved = wait_for(lambda: done() and time.monotonic(), 10, "the move")
        return moved - start
    finally:
        for stat in proc.all_stats():
            if stat.comm == "reptyr":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(stat.pid, signal.SIGKILL)
        spawner.cleanup()


def time_menu_choice(kind: str, mode: str = "auto") -> float:
    """Seconds from the menu key typed into a real attached client until the chosen program's stdin is
    the new pane's pty: prefix + A opened the menu first, as a person does (the picker is waiting)."""
    spawner = Spawner()
    tmux("set-option", "-g", "@reptyr-mode", mode)
    client = Client(Tmux(SOCKET), rows=int(SIZE[1]), cols=int(SIZE[0]), target="bench")
    try:
        target = victim(spawner, kind)
        old = os.readlink(f"/proc/{target.pid}/fd/0")
        listed = [*OURS, "pick", "-L", SOCKET, "--list"]  # a shell's child is left out for its first second
        wait_for(lambda: f" {target.pid} " in " " + subprocess.run(listed, capture_output=True, text=True
                                                                  ).stdout, 10, "the target in the list")
        client.type(b"\x02A")
        client.wait("adopt which process?")
        key = wait_for(lambda: f" {target.pid} " in client.text() and client.menu_key(target.pid), 10,
                       "the target's row in the menu")
        start = time.monotonic()
        client.type(key.encode())
        moved = wait_for(lambda: os.readlink(f"/proc/{target.pid}/fd/0") != old and time.monotonic(), 10,
                         "the move")
        wait_for(lambda: "@reptyr-waiting" not in tmux("show-options", "-g"), 10, "the picker's end")
        return moved - start
    finally:
        client.close()
        spawner.cleanup()


def _holds_master(comm: str, index: int) -> bool:
    for stat in proc.all_stats():
        if stat.comm != comm:
            continue
        if any(proc.tty_index(stat.pid, fd) == index for fd in proc.fd_links(stat.pid)):
            return True
    return False


def rss_kb(pid: int) -> int:
    return proc.resident_kb(pid)


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


def new_window(*argv: str) -> tuple[str, int]:
    """A window running argv itself (no shell in between): its pane id and first process. It becomes
    the current window, as adopt's do: tmux handles output of a background window measurably slower."""
    pane, pid = tmux("new-window", "-P", "-F", "#{pane_id} #{pane_pid}", "-t", "bench", *argv).split()
    return pane, int(pid)


def last_pane() -> tuple[str, int]:
    pane, pid = tmux("display-message", "-p", "-t", "bench:{end}", "#{pane_id} #{pane_pid}").split()
    return pane, int(pid)


def check_size(pane: str) -> None:
    size = tuple(tmux("display-message", "-p", "-t", pane, "#{pane_width} #{pane_height}").split())
    if size != SIZE:
        raise RuntimeError(f"pane {pane} is {size}, not {SIZE}")


def child_of(parent: int) -> int | None:
    return next((s.pid for s in proc.all_stats() if s.ppid == parent and s.state != "Z"), None)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_write(pid: int, result: Path) -> tuple[float, float]:
    """SIGUSR1 to a waiting writer: MiB/s from the seconds it reports once its last write returned,
    and the tmux server's CPU ms per MiB meanwhile (what bounds the rate: less noisy than the rate)."""
    time.sleep(0.3)  # whatever relays it has started reading
    server = int(tmux("display-message", "-p", "-t", "bench", "#{pid}"))
    cpu = cpu_seconds(server)
    os.kill(pid, signal.SIGUSR1)
    elapsed = float(wait_for(lambda: result.exists() and result.read_text(), 120, "the writer"))
    time.sleep(0.2)  # the last buffered bytes drain
    return MIB / elapsed, (cpu_seconds(server) - cpu) * 1000 / MIB


def ceiling_rate(tmp: Path) -> tuple[float, float]:
    result = Path(tempfile.mkdtemp(dir=tmp)) / "result"
    pane, pid = new_window(*WRITER, str(result))
    wait_for(lambda: "ready" in tmux("capture-pane", "-p", "-t", pane), 10, "the writer")
    check_size(pane)
    return timed_write(pid, result)


def adopted_rate(tmp: Path, ours: bool) -> tuple[float, float]:
    """The writer, alone on a test pty nobody reads, moved into a window by adopt or by reptyr."""
    result = Path(tempfile.mkdtemp(dir=tmp)) / "result"
    spawner = Spawner()
    try:
        writer = spawner.on_pty([*WRITER, str(result)])
        old = writer.stat().tty_nr
        if ours:
            subprocess.run([*OURS, "adopt", "-L", SOCKET, "-t", "bench", "--mode", "attach", str(writer.pid)],
                           check=True, capture_output=True)
            pane, _ = last_pane()
        else:
            pane, _ = new_window("reptyr", str(writer.pid))
        wait_moved(writer.pid, old)
        check_size(pane)
        return timed_write(writer.pid, result)
    finally:
        spawner.cleanup()


class SshdLike:
    """tests/victims/sshd_like.py with one session: holds its pty master, logs all it reads there."""

    def __init__(self, logdir: Path):
        self.log = logdir / "0.log"
        self.job: int | None = None
        self.process = subprocess.Popen([sys.executable, str(VICTIMS / "sshd_like.py"), str(logdir), "1"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.process.stdout.readline()
        self.shell = wait_for(lambda: child_of(self.process.pid), what="the shell")
        self.wait_log(b"$ ")

    def wait_log(self, text: bytes) -> None:
        wait_for(lambda: self.log.exists() and text in self.log.read_bytes(), 10, repr(text))

    def run(self, command: str) -> int:
        self.process.stdin.write(f"0 {command}\n")
        self.process.stdin.flush()
        self.job = wait_for(lambda: child_of(self.shell), what="the job")
        return self.job

    def close(self) -> None:
        for pid in (self.job, self.shell):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait()


def steal_into_window(pid: int, ours: bool) -> int:
    """Move pid's whole session into a new window; the pane's first process, once it alone holds
    the session's master (the old holder reads nothing any more)."""
    if ours:
        subprocess.run([*OURS, "adopt", "-L", SOCKET, "-t", "bench", "--mode", "steal", str(pid)],
                       check=True, capture_output=True)
        pane, relay = last_pane()
    else:
        pane, relay = new_window("reptyr", "-T", str(pid))
    wait_for(lambda: [h.pid for h in find_session(pid).holders] == [relay], 10, "the master to move")
    check_size(pane)
    return relay


def stolen(tmp: Path, ours: bool) -> tuple[float, float, int]:
    """The writer in a shell behind an sshd-like holder, session stolen into a window:
    MiB/s, the relay's CPU ms per MiB, its RSS in kB."""
    logdir = Path(tempfile.mkdtemp(dir=tmp))
    result = logdir / "result"
    holder = SshdLike(logdir)
    try:
        writer = holder.run(f"{' '.join(WRITER)} {result}")
        holder.wait_log(b"ready\r\n")
        relay = steal_into_window(writer, ours)
        logged, cpu = holder.log.stat().st_size, cpu_seconds(relay)
        rate, _ = timed_write(writer, result)
        cpu = cpu_seconds(relay) - cpu
        if holder.log.stat().st_size != logged:
            raise RuntimeError("the old holder still read the terminal during the run")
        return rate, cpu * 1000 / MIB, rss_kb(relay)
    finally:
        holder.close()


def row(name: str, ours: float, theirs: float | None = None, fmt: str = "9.1f") -> None:
    line = f"{name:58} {ours:{fmt}}"
    if theirs is not None:
        line += f" {theirs:{fmt}} {ours / theirs:11.2f}"
    print(line, flush=True)


def throughput_rows(reps: int, tmp: Path) -> None:
    runs = [(ceiling_rate(tmp), adopted_rate(tmp, True), adopted_rate(tmp, False)) for _ in range(reps)]
    (ceiling, ceiling_cpu), (ours, ours_cpu), (theirs, theirs_cpu) = (
        tuple(statistics.median(r[i][j] for r in runs) for j in range(2)) for i in range(3))
    row("output throughput, adopt --mode attach vs reptyr (MiB/s)", ours, theirs)
    row("  tmux server CPU per MiB meanwhile (ms)", ours_cpu, theirs_cpu)
    row("  ceiling: the writer started in the window (MiB/s)", ceiling)
    row("  ceiling: tmux server CPU per MiB (ms)", ceiling_cpu)
    row("  attach mode / ceiling (target >= 0.99)", ours / ceiling, fmt="9.3f")


def steal_rows(reps: int, tmp: Path) -> None:
    runs = [(stolen(tmp, True), stolen(tmp, False)) for _ in range(reps)]
    names = (("steal mode throughput, vs reptyr -T (MiB/s)", "9.1f"),
             ("  relay CPU per MiB written (ms; target <= reptyr's)", "9.1f"),
             ("  relay RSS after the run (kB)", "9.0f"))
    for i, (name, fmt) in enumerate(names):
        row(name, statistics.median(r[0][i] for r in runs), statistics.median(r[1][i] for r in runs), fmt)


def menu_rows(reps: int, reptyr_whole_session: float) -> None:
    """The path a person takes: the menu's choice to the program on the pane's pty (8 above)."""
    subprocess.run([*OURS, "plugin-init", "-L", SOCKET], check=True, capture_output=True)  # prefix + A
    plain = {kind: statistics.median(time_in_tmux(["reptyr"], kind, True) for _ in range(reps)) * 1000
             for kind in ("job", "leader")}
    for kind, mode, label in (("leader", "auto", "session leader"), ("job", "attach", "shell's job alone"),
                              ("job", "auto", "session move")):
        chosen = statistics.median(time_menu_choice(kind, mode) for _ in range(reps)) * 1000
        row(f"menu choice -> on the pane's pty, {label} (ms) vs reptyr PID", chosen, plain[kind])
        if mode == "auto" and kind == "job":
            row("  the same session move vs reptyr -T PID (ms)", chosen, reptyr_whole_session)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--reps", type=int, help="repetitions per number (default 5; 3 for 5 and 6)")
    args = parser.parse_args()
    if not shutil.which("reptyr"):
        print("reptyr is not installed: apt-get install reptyr (benchmark only)", file=sys.stderr)
        return 2
    import compileall  # as setup.sh does: with PYTHONDONTWRITEBYTECODE, stale bytecode is compiled every run

    compileall.compile_dir(str(ROOT / "reptyr_tmux"), quiet=1)
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
                a = statistics.median(ours() for _ in range(args.reps or 5)) * 1000
                b = statistics.median(theirs() for _ in range(args.reps or 5)) * 1000
                print(f"{name:58} {a:9.1f} {b:9.1f} {a / b:11.2f}")
        reps = args.reps or 5
        ours = statistics.median(time_session_move("ours") for _ in range(reps)) * 1000
        plain = statistics.median(time_session_move("plain") for _ in range(reps)) * 1000
        whole = statistics.median(time_session_move("-T") for _ in range(reps)) * 1000
        for name, theirs in (("session move, shell job (ms) vs reptyr PID", plain),
                             ("session move, shell job (ms) vs reptyr -T PID", whole)):
            row(name, ours, theirs)
        menu_rows(reps, whole)
        holder, relay = lingering_memory()
        print(f"{'lingering RSS per adopted process (kB)':58} {holder:9d} {relay:9d} {holder / relay:11.3f}")
        print(f"{'picker listing with 2,000 extra processes (ms)':58} {picker_time() * 1000:9.1f}")
        with tempfile.TemporaryDirectory(prefix="reptyr-bench-") as tmp:
            throughput_rows(args.reps or 3, Path(tmp))
            steal_rows(args.reps or 3, Path(tmp))
    finally:
        tmux("kill-server")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
