"""`reptyr-tmux screen-pick`: the picker for GNU screen, a numbered list in its own window.

screenrc:  bind J screen -t adopt /path/to/reptyr-tmux screen-pick
Choosing a number adopts that process into a new screen window; the list's window then closes.
"""

from __future__ import annotations

import argparse
import os
import sys

from reptyr_tmux import proc
from reptyr_tmux.frontends import numbered
from reptyr_tmux.frontends.picker import candidates


def _screen_window_ttys() -> set[proc.Tty]:
    """The terminals of screen's own windows: what runs there is in screen already."""
    stats = proc.all_stats()
    screens = {s.pid for s in stats if s.comm.lower().startswith("screen")}
    windows = (proc.ctty_of(s.pid, s) for s in stats if s.ppid in screens and s.tty_dev)
    return {tty for tty in windows if tty is not None}


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="reptyr-tmux screen-pick", description="The picker for GNU screen: run it in a screen window "
        "(~/.screenrc: bind J screen -t adopt /path/to/reptyr-tmux screen-pick). It lists the processes "
        "you may adopt; type a number and that one moves into a new screen window.").parse_args(argv)
    session = os.environ.get("STY")
    if not session:
        print("reptyr-tmux screen-pick: run this inside GNU screen (see the README's screenrc line)",
              file=sys.stderr)
        return 2
    found = candidates(_screen_window_ttys(), enough=30)
    cand = numbered.choose(found, "Adopt which process into a new screen window?")
    if cand is None:
        return 0
    return numbered.adopt(cand, ["--screen-session", session])
