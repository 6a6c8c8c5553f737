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


def from_bytes(raw: bytes) -> str:
    """Decode what a process gave us, whatever its encoding; invalid UTF-8 becomes U+FFFD."""
    return raw.decode("utf-8", "replace")
