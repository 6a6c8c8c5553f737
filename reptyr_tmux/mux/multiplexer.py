"""What tmux and GNU screen have in common for adopt: a pane, and how to open one."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol

from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.frontends.status import SUMMARY_MS

READY_WITHIN_S = 5.0


class Pane(NamedTuple):
    pane_id: str
    pane_pid: int
    pane_tty: str
    window_id: str
    place: str = ""  # where a person finds it, in words ("tmux session 'main', window 2")


class Multiplexer(Protocol):
    """What adopt needs from tmux or GNU screen."""

    def open_pane(self, placement: str, command: list[str], name: str, target: str | None) -> Pane: ...
    def needs_report(self, placement: str) -> bool: ...  # True: command gets a report-file argument
    def dress(self, pane: Pane, placement: str, name: str, remain_on_exit: bool) -> None: ...
    def refuse_own(self, pid: int) -> None: ...
    def message(self, text: str, target: str | None = None, duration_ms: int = SUMMARY_MS) -> None: ...
    def can_type(self) -> bool: ...  # type_into works
    def type_into(self, pane: Pane, text: str) -> None: ...  # as if typed there, taken literally


def launch_and_read_report(launch: Callable[[str], subprocess.Popen], what: str) -> tuple[int, str]:
    """Start a pane whose first process writes "pid tty" to the file named by `launch`'s argument
    once ready (popups and screen windows cannot be asked for their pid and tty); return them.
    The file lives in a private (0700) directory, so no one else can forge the answer."""
    import tempfile  # here: only popups and screen windows need it

    with tempfile.TemporaryDirectory(prefix="reptyr-tmux-") as private:
        report = os.path.join(private, "ready")
        client = launch(report)
        deadline = time.monotonic() + READY_WITHIN_S
        while not os.path.exists(report):
            failed = client.poll() not in (None, 0)
            if failed or time.monotonic() > deadline:
                reason = client.stderr.read().decode(errors="replace").strip() if failed and client.stderr \
                    else f"it did not start within {READY_WITHIN_S:g} s"
                raise ReptyrError(f"{what} failed: {reason or 'no client to show it on'}")
            time.sleep(0.002)
        with open(report) as f:
            pid, tty = f.read().split()
    return int(pid), tty
