"""What a person recognises of a command line: `python3 /srv/app/bin/train.py -e 3` is `train.py -e 3`.

Two rows that both start with a long interpreter path look the same in a 70-column menu; the script's
name and its arguments are what tell them apart. Display only: nothing here is run.
"""

from __future__ import annotations

import os
import re

# Interpreter families: which options hold code or a module (show everything from there on, the
# interpreter included), and which take a value (skip it while looking for the script).
FAMILIES = (
    (re.compile(r"(python|pypy)[0-9.]*"), {"-c", "-m"}, {"-W", "-X", "--check-hash-based-pycs"}),
    (re.compile(r"(ba|da|z|k|mk|fi|c|tc)?sh"), {"-c"}, {"-o", "-O", "+O"}),
    (re.compile(r"(perl|ruby|php|lua)[0-9.]*"), {"-e", "-E", "-r"}, {"-I"}),
    (re.compile(r"(node|nodejs|deno|bun)"), {"-e", "--eval", "-p", "--print"}, {"-r", "--require"}),
)


def recognisable(argv: list[str]) -> str:
    """The command line as a person knows it; argv[0] and a script lose their directories."""
    if not argv:
        return ""
    program = _short(argv[0])
    family = next((f for f in FAMILIES if f[0].fullmatch(program)), None)
    if family is None:
        return " ".join([program, *argv[1:]])
    _, code_options, value_options = family
    rest = argv[1:]
    i = 0
    while i < len(rest) and rest[i].startswith(("-", "+")) and rest[i] not in ("-", "--"):
        if rest[i] in code_options:
            return " ".join([program, *rest])
        i += 2 if rest[i] in value_options else 1
    i += 1 if i < len(rest) and rest[i] == "--" else 0
    if i >= len(rest) or rest[i] == "-":
        return " ".join([program, *rest])  # interactive, or reading its script from stdin
    return " ".join([_short(rest[i]), *rest[i + 1:]])


def _short(path: str) -> str:
    """A path's last part; a name with spaces is not a path (exec -a can set argv[0] to anything)."""
    return path if " " in path else os.path.basename(path) or path
