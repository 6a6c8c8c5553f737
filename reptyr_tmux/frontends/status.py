"""`--status-line`: how a command run by a tmux key binding or menu item speaks.

tmux shows what a `run-shell -b` command prints on stdout, and a non-zero exit status ("'…' returned
2"), in view-mode over the active pane, which then swallows the next keys until `q`; it drops stderr.
So with --status-line a command prints nothing and exits 0: its summary and its errors go to tmux's
status line (`display-message -d`), which also keeps them in its message log (`show-messages`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from reptyr_tmux.errors import ReptyrError, internal_error

SUMMARY_MS = 4000  # how long a status-line message stays: long enough to read (tmux's default: 750 ms)
ERROR_MS = 10000  # a sentence to act on

FLAG = "--status-line"
HELP = ("say the outcome on tmux's status line only (also kept in show-messages), print nothing, exit 0 "
        "even on failure: for key bindings and menu items, whose output tmux shows in view-mode")
STALE_BINDING = ("reptyr-tmux: the key binding passes options this version does not know; "
                 "re-run the plugin (run-shell …/reptyr.tmux, or reptyr-tmux plugin-init)")


def run(command: Callable[[list[str]], int], argv: list[str]) -> int:
    """Run a command whose output tmux would otherwise show in view-mode; always 0."""
    _stdout_to_null()
    try:
        command(argv)
    except SystemExit as e:  # argparse, for options it does not know
        if e.code not in (0, None):
            tell(argv, STALE_BINDING)
    except ReptyrError as e:
        tell(argv, f"reptyr-tmux: {e}")
    except Exception as e:  # a bug of ours: still not in view-mode
        if os.environ.get("REPTYR_TMUX_DEBUG"):
            raise
        tell(argv, f"reptyr-tmux: {internal_error(e)}")
    return 0


def tell(argv: list[str], text: str, duration_ms: int = ERROR_MS) -> None:
    """Show `text` on the status line of the tmux server named in argv (-L/-S), or ours."""
    import argparse

    from reptyr_tmux.mux.tmux import Server

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("-L", dest="socket_name")
    where.add_argument("-S", dest="socket_path")
    known, _ = where.parse_known_args(argv)
    try:
        Server(known.socket_name, known.socket_path).message(text, duration_ms=duration_ms)
    except ReptyrError:
        print(text, file=sys.stderr)  # no tmux to tell: stderr is all there is


def _stdout_to_null() -> None:
    """Whatever still writes to stdout (ours or a child's) goes nowhere rather than into view-mode."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
