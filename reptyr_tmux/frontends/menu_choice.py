"""How a choice made in tmux's menu comes back to the picker that drew the menu.

A menu item runs a tmux command once the menu has closed. Had it started `reptyr-tmux adopt` anew, every
adoption would pay for a Python start and its imports (~75 ms) after the choice. So the picker waits
instead, with the engine's process started and the adoption's modules loaded, and each item only
leaves the pid it stands for in a server option for the picker to read.

tmux runs the item's command in the attached client's queue, the picker's `display-menu` returns in
its own; nothing orders the two. So the item asks first whether the picker is still waiting (a second
option), and where it is not, it adopts the old way, with `run-shell`. The picker ends its wait and
reads the choice in one tmux command list, which the server runs in one go: each choice is taken by
exactly one of the two.
"""

from __future__ import annotations

import os
import shlex

from reptyr_tmux.mux.tmux import Server


class MenuChoice:
    """The two server options of one menu: "the picker still waits" and "the pid chosen"."""

    def __init__(self, server: Server, token: int | None = None):
        self.server = server
        token = os.getpid() if token is None else token
        self.waiting = f"@reptyr-waiting-{token}"
        self.chosen = f"@reptyr-chosen-{token}"

    def __enter__(self) -> MenuChoice:
        self.server.cmd("set-option", "-g", self.waiting, "1")
        return self

    def __exit__(self, *_: object) -> None:
        if self.waiting:  # taken() was never called: an error on the way
            self.taken()

    def item_command(self, number: int, otherwise: list[str]) -> str:
        """The tmux command of item `number`: tell the waiting picker, or else run the command
        `otherwise` (our own argv and numbers). display-menu expands formats in it once ('##' is left
        as '#'), if-shell the condition, run-shell its command."""
        tell = f"set-option -g {self.chosen} {number}"
        run = "run-shell -b " + _quoted(shlex.join(otherwise).replace("#", "####"))
        return f"if-shell -F '##{{{self.waiting}}}' '{tell}' {_quoted(run)}"

    def taken(self) -> int | None:
        """Stop waiting; the number (pid) chosen, or None (nothing chosen, or the item has not run yet and
        will now adopt on its own)."""
        answer = self.server.cmd("set-option", "-gu", self.waiting, ";", "show-options", "-gqv", self.chosen,
                                 ";", "set-option", "-gu", self.chosen)
        self.waiting = ""
        answer = answer.strip()
        return int(answer) if answer.isdigit() else None


def _quoted(command: str) -> str:
    """`command` as one argument of a tmux command: single quotes, and sh's way for a quote inside."""
    return "'" + command.replace("'", "'\\''") + "'"
