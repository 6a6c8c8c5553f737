"""Two string capabilities of a terminal type, read from the system's compiled terminfo (term(5)).

Reading the entry ourselves spares two tput processes per full-screen adoption. Only the system's
directories are searched, never TERMINFO, TERMINFO_DIRS or ~/.terminfo (ours may be a user's, root
after `su` without -), and the entry is named by a plain name only (TERM comes from the target's
environ: anyone's text). An entry not found there is asked of tput, with a clean environment: its
compiled-in places may differ (NixOS, a hand-built ncurses).
"""

from __future__ import annotations

import os
import re
import struct
import subprocess

from reptyr_tmux import trust

SYSTEM_DIRS = ("/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo", "/usr/lib/terminfo")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
STRINGS = {"smcup": 28, "smkx": 89}  # positions in the string section (ncurses' Caps order)
MAGIC_16BIT, MAGIC_32BIT = 0o432, 0o1036  # the header's magic: how wide the numbers are
HEADER = struct.Struct("<6h")  # magic, sizes of the names, booleans, numbers, string offsets, string table


def capabilities(term: str, *names: str) -> list[str]:
    """The capabilities `names` (of STRINGS) of terminal type `term`; "" where it has none."""
    if not NAME.fullmatch(term):
        return ["" for _ in names]
    entry = _entry(term)
    if entry is None:
        return [_from_tput(term, name) for name in names]
    try:
        return [_string(entry, STRINGS[name]) for name in names]
    except (struct.error, ValueError, IndexError):  # a damaged entry has nothing usable
        return ["" for _ in names]


def _entry(term: str) -> bytes | None:
    for base in SYSTEM_DIRS:
        for folder in (term[0], f"{ord(term[0]):02x}"):  # Linux names folders by letter, others by hex
            try:
                with open(os.path.join(base, folder, term), "rb") as f:
                    return f.read(1 << 16)
            except OSError:
                continue
    return None


def _string(entry: bytes, index: int) -> str:
    magic, names, booleans, numbers, strings, _ = HEADER.unpack_from(entry)
    if magic not in (MAGIC_16BIT, MAGIC_32BIT) or index >= strings:
        return ""
    offsets_at = HEADER.size + names + booleans
    offsets_at += offsets_at % 2  # the numbers start on an even byte
    offsets_at += numbers * (2 if magic == MAGIC_16BIT else 4)
    (offset,) = struct.unpack_from("<h", entry, offsets_at + 2 * index)
    if offset < 0:  # -1 absent, -2 cancelled
        return ""
    start = offsets_at + 2 * strings + offset
    return entry[start : entry.index(b"\0", start)].decode("latin-1")


def _from_tput(term: str, name: str) -> str:
    try:
        result = subprocess.run(["tput", "-T", term, name], capture_output=True, cwd="/",
                                stdin=subprocess.DEVNULL, env=trust.CLEAN_ENV, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.decode(errors="replace") if result.returncode == 0 else ""
