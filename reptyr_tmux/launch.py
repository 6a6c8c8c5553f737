"""How to start our own Python entry points fast, for commands tmux runs for us.

`python -S` skips site-packages processing (.pth files, editable-install finders): ~25 ms here, a
quarter of an adoption. The packages we need are put on sys.path by hand instead.
"""

from __future__ import annotations

import os
import sys


def _package_roots() -> list[str]:
    import ptrace

    import reptyr_tmux

    roots = [os.path.dirname(os.path.dirname(os.path.abspath(m.__file__))) for m in (reptyr_tmux, ptrace)]
    return list(dict.fromkeys(roots))


def python_argv(module: str) -> list[str]:
    """argv that runs `python -m module` without site processing; append the module's arguments."""
    import json  # here: only the Python holder and relay need it

    # json quoting: only double quotes inside, so the shell's single quotes wrap it cleanly.
    name = json.dumps(module)
    code = (f"import sys; sys.path[:0] = {json.dumps(_package_roots())}; import runpy; "
            f"sys.argv[0] = {name}; runpy.run_module({name}, run_name=\"__main__\")")
    return [sys.executable, "-S", "-c", code]
