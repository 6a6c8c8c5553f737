"""`reptyr-tmux plugin-init`, called by reptyr.tmux: bind the picker to a key.

The options are read again each time the picker runs, so only @reptyr-key needs the plugin re-run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.frontends import status
from reptyr_tmux.launch import python_argv
from reptyr_tmux.mux.tmux import MENUS_FROM, POPUPS_FROM, Server

DEFAULT_KEY = "A"  # prefix + A: unbound in tmux's defaults; "A" for adopt
KEY_PATTERN = re.compile(r"^[A-Za-z0-9~!@%^&*()_+=\[\]{}:,.<>/?|-]+$|^[CM]-\S+$|^F\d{1,2}$")


def init(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reptyr-tmux plugin-init", description="Bind the picker to "
                                     "prefix + @reptyr-key (default A) in tmux; what reptyr.tmux runs. "
                                     "In ~/.tmux.conf: run-shell 'reptyr-tmux plugin-init'")
    parser.add_argument("-L", dest="socket_name", metavar="NAME", help="tmux server socket name")
    args = parser.parse_args(argv)
    server = None
    try:
        server = Server(socket_name=args.socket_name)
        key = server.option("@reptyr-key") or DEFAULT_KEY
        if not KEY_PATTERN.match(key):
            raise ReptyrError(f"@reptyr-key '{key}' is not a key tmux can bind; try a letter such as A")
        socket = ["-L", args.socket_name] if args.socket_name else []
        pick = [*python_argv("reptyr_tmux"), "pick", status.FLAG, *socket]
        server.cmd("bind-key", key, "run-shell", "-b", shlex.join(pick).replace("#", "##"))
        said = ready_sentence(key, server)
        server.message(said)  # seen when re-run from a client (TPM's prefix + I, source-file)
        if sys.stdout.isatty():  # by hand; from tmux.conf stdout would land in a pane's view-mode
            print(said)
    except ReptyrError as e:
        print(f"reptyr-tmux: {e}", file=sys.stderr)
        if server is not None:  # run from tmux.conf, stderr goes nowhere
            server.message(f"reptyr-tmux: {e}", duration_ms=status.ERROR_MS)
        return e.exit_code
    return 0


def ready_sentence(key: str, server: Server) -> str:
    """What the binding does with the tmux found, and what that tmux lacks."""
    found = f"tmux {server.version_text()}"
    if server.version() < MENUS_FROM:
        found += ": no menus before 3.0, so it opens a window listing them by number; no popups"
    elif server.version() < POPUPS_FROM:
        found += ": no popups before 3.2"
    return f"reptyr-tmux is ready: prefix + {key} adopts a running process ({found})"
