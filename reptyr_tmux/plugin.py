"""`reptyr-tmux plugin-init`, called by reptyr.tmux: bind the picker to a key.

The options are read again each time the picker runs, so only @reptyr-key needs the plugin re-run.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys

from reptyr_tmux import status
from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.launch import python_argv
from reptyr_tmux.tmux import Server

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
    except ReptyrError as e:
        print(f"reptyr-tmux: {e}", file=sys.stderr)
        if server is not None:  # run from tmux.conf, stderr goes nowhere
            server.message(f"reptyr-tmux: {e}", duration_ms=status.ERROR_MS)
        return e.exit_code
    return 0
