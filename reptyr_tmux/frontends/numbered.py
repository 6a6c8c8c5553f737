"""The picker as a numbered list on a terminal, where there is no menu: a GNU screen window
(screen_pick.py), and a tmux window on tmux before 3.0, which has no display-menu (picker.py).
Type a number and that process is adopted by the adopt command line the caller gives."""

from __future__ import annotations

import subprocess

from reptyr_tmux.frontends.picker import Candidate, adopt_command, label
from reptyr_tmux.launch import python_argv
from reptyr_tmux.text import printable


def choose(found: list[Candidate], title: str) -> Candidate | None:
    """The usable candidates, numbered; the one whose number is typed, or None (Enter, anything else)."""
    usable = [c for c in found if c.refusal is None]
    if not usable:
        input("No process to adopt. Press Enter. ")
        return None
    print(f"{title}\n")
    for number, cand in enumerate(usable, 1):
        print(printable(f"{number:3}  {label(cand)}", 150))
    answer = input("\nnumber (Enter to cancel): ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(usable):
        return None
    return usable[int(answer) - 1]


def adopt(cand: Candidate, adopt_args: list[str]) -> int:
    """Run the adoption of `cand`; on failure keep its message on this terminal until Enter."""
    result = subprocess.run([*python_argv("reptyr_tmux"), "adopt", *adopt_command(cand, adopt_args)])
    if result.returncode != 0:
        input("Press Enter. ")
    return result.returncode
