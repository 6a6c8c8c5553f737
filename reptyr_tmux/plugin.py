"""`reptyr-tmux plugin-init`, called by reptyr.tmux: bind the picker to a key.

The options are read again each time the picker runs, so only @reptyr-key needs the plugin re-run.
"""

from __future__ import annotations

import re
import shlex
import sys

from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.launch import python_argv
from reptyr_tmux.tmux import Server

DEFAULT_KEY = "A"  # prefix + A: unbound in tmux's defaults; "A" for adopt
KEY_PATTERN = re.compile(r"^[A-Za-z0-9~!@%^&*()_+=\[\]{}:,.<>/?|-]+$|^[CM]-\S+$|^F\d{1,2}$")


def init(argv: list[str]) -> int:
    socket = argv[argv.index("-L") + 1] if "-L" in argv else None
    try:
        server = Server(socket_name=socket)
        key = server.option("@reptyr-key") or DEFAULT_KEY
        if not KEY_PATTERN.match(key):
            raise ReptyrError(f"@reptyr-key '{key}' is not a key tmux can bind; try a letter such as A")
        pick = [*python_argv("reptyr_tmux"), "pick"] + (["-L", socket] if socket else [])
        server.cmd("bind-key", key, "run-shell", "-b", shlex.join(pick).replace("#", "##"))
    except ReptyrError as e:
        print(f"reptyr-tmux: {e}", file=sys.stderr)
        return e.exit_code
    return 0
