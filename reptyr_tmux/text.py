"""Process names and command lines are attacker-controlled: make them safe to show."""

from __future__ import annotations

import unicodedata


def printable(text: str, limit: int = 200) -> str:
    """One line of visible characters: control characters (ESC, newlines, C1) become '?'; trimmed."""
    cleaned = "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def tmux_literal(text: str, limit: int = 200) -> str:
    """Text tmux shows as is: printable, with '#' doubled so no format (#{}, #()) is expanded."""
    return printable(text, limit).replace("#", "##")


def tmux_message(text: str, limit: int = 300) -> str:
    """Text display-message shows as is: it also expands '%' like strftime, so '%' is doubled too."""
    return tmux_literal(text, limit).replace("%", "%%")


def whole_words(text: str, limit: int) -> str:
    """At most `limit` characters, cut between words (with '…') rather than inside one."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut and not text[limit - 1].isspace():
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip(" ,;:(") + "…"


def from_bytes(raw: bytes) -> str:
    """Decode what a process gave us, whatever its encoding; invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")
