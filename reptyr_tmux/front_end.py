"""Who "we" are as the user sees it: this command and the shell that ran it. The engine's own process
(worker.py) speaks for the command that started it."""

from __future__ import annotations

import os

_speaking_for: tuple[int, int] | None = None


def speak_for(command: int, its_parent: int) -> None:
    global _speaking_for
    _speaking_for = (command, its_parent)


def command_and_parent() -> tuple[int, int]:
    return _speaking_for or (os.getpid(), os.getppid())
