"""A thin, typed door to a tmux server, named like tmux's own objects.

The adoption path calls the tmux binary directly: importing libtmux costs ~65 ms here, more than the
whole attach. libtmux serves the demo and the tests, where start-up time does not matter.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable

from reptyr_tmux import trust
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.frontends.status import SUMMARY_MS
from reptyr_tmux.mux.multiplexer import Pane, launch_and_read_report
from reptyr_tmux.text import printable, tmux_literal, tmux_message

PANE_FORMAT = "#{pane_id}\t#{pane_pid}\t#{pane_tty}\t#{window_id}\t#{session_name}\t#{window_index}"
PLACEMENTS = {"window": ["new-window"], "split-h": ["split-window", "-h"],
              "split-v": ["split-window", "-v"]}
MENUS_FROM = (3, 0)  # display-menu
PANE_OPTIONS_FROM = (3, 0)  # set-option -p
POPUPS_FROM = (3, 2)  # display-popup
POPUP_TITLES_FROM = (3, 3)  # display-popup -T
TIMED_MESSAGES_FROM = (3, 2)  # display-message -d
LITERAL_WINDOW_NAMES = ((3, 0), (3, 0))  # 3.0 and 3.0a take new-window -n as it is; others expand formats


_VERSIONS: dict[str, str] = {}  # tmux binary -> what its -V says


class TmuxError(ReptyrError):
    pass


class Server:
    def __init__(self, socket_name: str | None = None, socket_path: str | None = None,
                 target: str | None = None):
        binary = shutil.which("tmux")
        if binary is None:
            raise TmuxError("tmux is not installed (apt-get install tmux)")
        self.argv = [binary]
        self._pid: int | None = None
        if socket_name:
            self.argv += ["-L", socket_name]
        if socket_path:
            self.argv += ["-S", socket_path]
        if not (socket_name or socket_path or target or os.environ.get("TMUX")):
            raise TmuxError("not inside tmux: run this from a tmux pane or key binding, or say where "
                            "with -t SESSION (default server) or -L/-S")
        if not (socket_name or socket_path):
            _refuse_an_inherited_foreign_server()

    def cmd(self, *args: str) -> str:
        return self.cmd_while(lambda: None, *args)

    def cmd_while(self, meanwhile: Callable[[], None], *args: str) -> str:
        """A tmux command, while `meanwhile` runs here (a command that waits for a person: a menu)."""
        returncode, stdout, stderr = self._run(meanwhile, args)
        if returncode != 0:
            reason = stderr.strip() or f"exit status {returncode}"
            raise TmuxError(f"tmux {args[0]} failed: {reason}")
        return stdout

    def run_while(self, meanwhile: Callable[[], None], *args: str) -> tuple[int, str]:
        """Like cmd_while, for a command whose exit status is not tmux's own (display-popup's is its
        program's): that status and what tmux wrote on stderr."""
        returncode, _, stderr = self._run(meanwhile, args)
        return returncode, stderr

    def _run(self, meanwhile: Callable[[], None], args: tuple[str, ...]) -> tuple[int, str, str]:
        with subprocess.Popen([*self.argv, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as command:
            meanwhile()
            stdout, stderr = command.communicate()
        return command.returncode, stdout, stderr

    def open_pane(self, placement: str, command: list[str], name: str, target: str | None) -> Pane:
        if placement != "popup":
            return self.new_pane(placement, command, name, target)
        if self.version() < POPUPS_FROM:
            raise Refusal(f"--popup needs tmux 3.2 or newer (this is tmux {self.version_text()}); use "
                          "--window, --split-h or --split-v")
        return self.new_popup(command, name, target)

    def can_type(self) -> bool:
        return True

    def type_into(self, pane: Pane, text: str) -> None:
        """`text` into the pane's input, literally: -l looks up no key names, and send-keys expands
        no formats."""
        self.cmd("send-keys", "-t", pane.pane_id, "-l", "--", text)

    def needs_report(self, placement: str) -> bool:
        return placement == "popup"  # a popup has no pane_pid/pane_tty to ask for

    def dress(self, pane: Pane, placement: str, name: str, remain_on_exit: bool) -> None:
        if placement == "popup":
            return  # titled at creation; a popup has no options of its own
        if placement != "window":
            self.cmd("select-pane", "-t", pane.pane_id, "-T", tmux_literal(name, 40))
        if remain_on_exit and self.version() < PANE_OPTIONS_FROM:  # the pane's window, then
            self.cmd("set-window-option", "-t", pane.pane_id, "remain-on-exit", "on")
        elif remain_on_exit:
            self.cmd("set-option", "-p", "-t", pane.pane_id, "remain-on-exit", "on")

    def refuse_own(self, pid: int) -> None:
        if pid == self.server_pid():
            raise Refusal(f"process {pid} is the tmux server itself")

    def new_pane(self, placement: str, command: list[str], name: str, target: str | None) -> Pane:
        """A new window or split running `command` as its first process."""
        args = [*PLACEMENTS[placement], "-P", "-F", PANE_FORMAT]
        if placement == "window":
            args += ["-n", self.window_name(name)]
        if target:
            args += ["-t", target]
        fields = self.cmd(*args, *command).strip().split("\t")
        place = f"tmux session '{printable(fields[4], 40)}', window {fields[5]}"
        return Pane(fields[0], int(fields[1]), fields[2], fields[3], place)

    def new_popup(self, command: list[str], name: str, target: str | None) -> Pane:
        """A popup (tmux >= 3.2) running `command`, which must write "pid tty" to the file named by
        its last argument once ready: a popup has no pane_pid/pane_tty to ask tmux for."""
        args = ["display-popup", "-E", "-w", "90%", "-h", "80%"]
        if self.version() >= POPUP_TITLES_FROM:
            args += ["-T", tmux_literal(name, 40)]
        if target:
            args += ["-t", target]

        def launch(report: str) -> subprocess.Popen:
            shell = "exec " + shlex.join([*command, report])
            return subprocess.Popen([*self.argv, *args, shell.replace("#", "##")], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

        pid, tty = launch_and_read_report(launch, "tmux display-popup")
        return Pane("popup", pid, tty, "", "a tmux popup")

    def window_name(self, name: str) -> str:
        """`name` as new-window -n shows it as it is: '#' doubled where tmux reads -n as a format."""
        literal = LITERAL_WINDOW_NAMES[0] <= self.version() <= LITERAL_WINDOW_NAMES[1]
        return printable(name, 40) if literal else tmux_literal(name, 40)

    def version_text(self) -> str:
        """What `tmux -V` says after "tmux " ("3.3a", "next-3.6"); asked once per binary and process."""
        if self.argv[0] not in _VERSIONS:
            said = subprocess.run([self.argv[0], "-V"], capture_output=True, text=True).stdout.split()
            _VERSIONS[self.argv[0]] = said[-1] if said else "(unknown version)"
        return _VERSIONS[self.argv[0]]

    def version(self) -> tuple[int, int]:
        """(major, minor): 3.1c is (3, 1); a build without a number ("master") counts as the newest."""
        digits = "".join(ch if ch.isdigit() or ch == "." else " " for ch in self.version_text()).split()
        if not digits:
            return (99, 0)
        major, _, minor = digits[0].partition(".")
        return int(major), int(minor.split(".")[0] or 0)

    def pane_ttys(self) -> set[str]:
        return set(self.cmd("list-panes", "-a", "-F", "#{pane_tty}").split())

    def server_pid(self) -> int:
        inside = os.environ.get("TMUX", "").split(",")  # "socket,pid,session" in run-shell and panes
        if len(self.argv) == 1 and len(inside) == 3 and inside[1].isdigit():
            return int(inside[1])  # our own server: no need to ask it
        if self._pid is None:  # asked once: a picker asks before its menu, so its adoption need not
            self._pid = int(self.cmd("display-message", "-p", "#{pid}").strip())
        return self._pid

    def message(self, text: str, target: str | None = None, duration_ms: int = SUMMARY_MS) -> None:
        """On the status line for `duration_ms` (tmux keeps it in its message log too: show-messages)."""
        where = ["-t", target] if target else []
        # older tmux shows it for display-time
        lasting = ["-d", str(duration_ms)] if self.version() >= TIMED_MESSAGES_FROM else []
        with contextlib.suppress(TmuxError):  # no client to show it to: the caller prints it as well
            self.cmd("display-message", *lasting, *where, tmux_message(text))

    def option(self, name: str) -> str:
        return self.cmd("show-option", "-gqv", name).strip()


def _refuse_an_inherited_foreign_server() -> None:
    """$TMUX may be inherited from another user's pane (root after su without -); a tmux client obeys
    its server, which can make it exec any program (MSG_SHELL), so it is only followed to a socket of
    ours in a directory no one else may write. -L/-S name a server explicitly (tmux itself checks
    -L's directory)."""
    path = os.environ.get("TMUX", "").split(",")[0]
    if not path:
        return
    fd = trust.open_socket_of(path, os.geteuid())
    if fd is None:
        raise Refusal(f"$TMUX names a tmux server that is not yours ({printable(path, 80)}, or its "
                      "directory is writable by others); run this as the user whose tmux it is, or name "
                      "a server of yours with -L/-S")
    os.close(fd)
