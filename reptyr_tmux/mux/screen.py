"""GNU screen as the multiplexer: a new screen window instead of a tmux pane.

`screen -S SESSION -X screen -t TITLE CMD...` opens the window; its first process (our holder or
relay) tells us its pid and tty through a private report file, since screen cannot be asked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from reptyr_tmux import proc
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.frontends.status import SUMMARY_MS
from reptyr_tmux.mux.multiplexer import Pane, launch_and_read_report

TITLE_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")  # screen expands %-escapes and ^E in titles


class ScreenSession:
    def __init__(self, session: str | None = None):
        self.binary = shutil.which("screen")
        if self.binary is None:
            raise ReptyrError("GNU screen is not installed (apt-get install screen)")
        self.session = session or os.environ.get("STY")
        if not self.session:
            raise Refusal("not inside GNU screen: run this from a screen window, or name the session "
                          "with --screen-session SESSION")

    def cmd(self, *args: str) -> None:
        result = subprocess.run([self.binary, "-S", self.session, "-X", *args], capture_output=True,
                                text=True, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ReptyrError(f"screen {args[0]} failed: {(result.stdout + result.stderr).strip()}")

    def open_pane(self, placement: str, command: list[str], name: str, target: str | None) -> Pane:
        title = TITLE_UNSAFE.sub("_", name)[:20] or "adopted"

        def launch(report: str) -> subprocess.Popen:
            return subprocess.Popen([self.binary, "-S", self.session, "-X", "screen", "-t", title,
                                     *command, report], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        pid, tty = launch_and_read_report(launch, "screen")
        return Pane(f"screen window {title}", pid, tty, "",
                    f"GNU screen session {TITLE_UNSAFE.sub('_', self.session)}, window {title}")

    def can_type(self) -> bool:
        return False  # screen's `stuff` parses escapes in its text: typed-ahead input is not carried

    def type_into(self, pane: Pane, text: str) -> None:
        raise NotImplementedError

    def needs_report(self, placement: str) -> bool:
        return True  # screen cannot be asked for a window's pid and tty

    def dress(self, pane: Pane, placement: str, name: str, remain_on_exit: bool) -> None:
        pass  # titled at creation

    def refuse_own(self, pid: int) -> None:
        if proc.read_stat(pid).comm.lower().startswith("screen"):
            raise Refusal(f"process {pid} is GNU screen itself")

    def message(self, text: str, target: str | None = None, duration_ms: int = SUMMARY_MS) -> None:
        # screen shows it for its own msgwait; it has no per-message duration
        try:
            self.cmd("echo", TITLE_UNSAFE.sub(" ", text)[:200])
        except ReptyrError:
            pass  # no display attached: the caller prints it too
