"""Load: many adoptions in a row and at once; everything adopted, nothing harmed, nothing leaked."""

from __future__ import annotations

import os
import signal
import subprocess

from conftest import CLI, ECHO, wait_for

from reptyr_tmux import proc


def fd_counts(pids: list[int]) -> dict[int, int]:
    return {pid: len(proc.open_fds(pid)) for pid in pids}


def ours(server: int) -> set[int]:
    """Our pane processes (holders, waiters, relays) in this tmux server, alive right now."""
    names = {"reptyr-holder", "memfd:reptyr-tm", "reptyr-relay"}
    return {s.pid for s in proc.all_stats() if s.comm in names and s.state not in "ZX" and s.ppid == server}


def adopt_cmd(tmux, pid: int) -> list[str]:
    return [*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(pid)]


def check_all_adopted(tmux, victims) -> None:
    pane_ttys = {os.stat(t).st_rdev for t in tmux("list-panes", "-a", "-F", "#{pane_tty}").split()}
    for victim in victims:
        assert victim.stat().tty_dev in pane_ttys
        victim.term.write(b"old terminal must be deaf now\n")
    for index in tmux.windows()[1:]:
        tmux("send-keys", "-t", f"main:{index}", "ping", "Enter")
    for index in tmux.windows()[1:]:
        tmux.wait_screen(f"main:{index}", "got: ping")


def test_twenty_in_a_row_and_five_at_once(spawn, tmux):
    server = int(tmux("display-message", "-p", "#{pid}"))
    before = ours(server)
    serial = [spawn.on_pty(ECHO) for _ in range(20)]
    parallel = [spawn.on_pty(ECHO) for _ in range(5)]
    fds_before = fd_counts([v.pid for v in serial + parallel])
    for victim in serial:
        result = subprocess.run(adopt_cmd(tmux, victim.pid), capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    running = [subprocess.Popen(adopt_cmd(tmux, v.pid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for v in parallel]
    for child in running:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert len(tmux.windows()) == 26
    check_all_adopted(tmux, serial + parallel)
    assert fd_counts([v.pid for v in serial + parallel]) == fds_before  # the same fds, now the panes'
    assert len(ours(server) - before) == 25  # one pane process per adopted program, no more
    for victim in serial + parallel:
        os.kill(victim.pid, signal.SIGTERM)
    wait_for(lambda: ours(server) <= before, 10, "every pane process to exit with its program")
    wait_for(lambda: tmux.windows() == ["0"], 10, "every pane to close")
