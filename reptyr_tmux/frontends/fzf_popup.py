"""The picker as an fzf popup (`@reptyr-picker fzf`, or `auto` when the menu would be cut short).

tmux's menu has one key per row and no search; fzf in a `display-popup` (tmux 3.2+) takes any number of
rows, filters them as one types and shows a preview. What fzf reads is written to a private directory
first: the rows (adoptable ones after a hidden index field; refused ones as fzf header lines, which
cannot be chosen) and one preview file per row. The popup's command holds only our own paths, so no
process name ever reaches a shell; every shown text went through printable() (no control characters:
fzf's --ansi finds only our own colour codes). fzf writes the chosen row to a file; once the popup has
closed, the row's index picks the candidate held here, and its adoption runs as the menu's would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable

from reptyr_tmux import proc
from reptyr_tmux.engine.survey import choose_mode
from reptyr_tmux.errors import Refusal
from reptyr_tmux.frontends.picker import MAX_GREYED, Candidate, command_of, label, refused_row
from reptyr_tmux.mux.tmux import Server, TmuxError
from reptyr_tmux.native.holder import private_cache_dir
from reptyr_tmux.text import printable

POPUP_MIN = (3, 2)  # tmux's first version with display-popup
GREY, PLAIN = "\x1b[90m", "\x1b[0m"  # refused rows; the only escape codes fzf ever sees from us
COLUMNS = f"{'PID':>7} {'TTY':<7} {'ELAPSED':>9}  {'MODE':<7} COMMAND"
PREVIEW_MIN_ROWS = 20  # the client's, for a preview under the list
TREE_ROWS = 40  # of the preview's process tree
PLACES = {"window": "a new window", "split-h": "a new pane beside this one",
          "split-v": "a new pane below this one", "popup": "a popup"}


def unavailable(server: Server) -> str | None:
    """Why the popup cannot be shown here (a few words), or None."""
    if shutil.which("fzf") is None:
        return "fzf is not installed (apt-get install fzf)"
    version = server.version()
    if version < POPUP_MIN:
        return f"tmux {version[0]}.{version[1]} has no popups (3.2 or newer has)"
    return None


def wanted(picker: str, server: Server) -> bool:
    """Whether @reptyr-picker (already checked to be menu, fzf or auto) may use the popup: `fzf` must,
    and refuses where it cannot; `auto` may where it can."""
    if picker == "menu":
        return False
    missing = unavailable(server)
    if missing and picker == "fzf":
        raise Refusal(f"@reptyr-picker is fzf, but {missing}; install it, or set @reptyr-picker to "
                      "menu or auto")
    return missing is None


def choose(server: Server, found: list[Candidate], client: tuple[int, int], placement: str,
           meanwhile: Callable[[], None] = lambda: None) -> Candidate | None:
    """Show the popup on the client; the candidate picked with Enter, or None (Esc, nothing chosen).
    `meanwhile` runs here while the popup is shown."""
    usable = [c for c in found if c.refusal is None]
    workdir = tempfile.mkdtemp(prefix="reptyr-pick-", dir=_workdir_base())  # 0700, a name no one guesses
    try:
        headers = _write_inputs(workdir, found, usable, client, placement)
        _show_popup(server, _popup_command(workdir, headers, bool(usable), client), meanwhile)
        return _chosen(os.path.join(workdir, "choice"), usable)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _workdir_base() -> str:
    """Where the picker's files may go: where no one else can swap our directory for theirs between
    writing the rows and fzf reading them (and writing the choice). A private cache directory, else
    a root-owned sticky /tmp: there only a directory's owner may rename or remove it."""
    base = private_cache_dir()
    if base is not None:
        return base
    st = os.lstat("/tmp")
    if stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
        return "/tmp"
    raise Refusal("no safe directory for the picker's files (~/.cache is writable by others and /tmp "
                  "is not sticky); set @reptyr-picker to menu")


def _write_inputs(workdir: str, found: list[Candidate], usable: list[Candidate], client: tuple[int, int],
                  placement: str) -> int:
    """The rows and previews fzf reads; how many of the rows are header lines (the refused ones)."""
    width = max(40, client[1] * 9 // 10 - 4)  # the popup's inside
    with open(os.path.join(workdir, "rows"), "w") as rows:
        # Header lines are cut into fields like the rest: an empty first field, then the row.
        refused = _refused_lines(found, width)
        rows.writelines(f"-\t{GREY}{line}{PLAIN}\n" for line in refused)
        rows.writelines(f"{index}\t{printable(label(cand), 300)}\n" for index, cand in enumerate(usable))
    os.mkdir(os.path.join(workdir, "preview"))
    stats = proc.all_stats()
    for index, cand in enumerate(usable):
        with open(os.path.join(workdir, "preview", str(index)), "w") as preview:
            preview.write("".join(printable(line, 1000) + "\n" for line in _preview(cand, stats, placement)))
    return len(refused)


def _refused_lines(found: list[Candidate], width: int) -> list[str]:
    refused = [c for c in found if c.refusal is not None]
    lines = [refused_row(c, width) for c in refused[:MAX_GREYED]]
    if len(refused) > MAX_GREYED:
        lines.append(f"({len(refused) - MAX_GREYED} more that cannot be adopted: reptyr-tmux pick --list)")
    return lines


def _popup_command(workdir: str, headers: int, any_usable: bool, client: tuple[int, int]) -> str:
    """What the popup runs: our own paths and options only (the rows are in files). Its shell is the
    user's default-shell, so only `exec` and redirections, which every shell reads alike; fzf runs the
    preview with $SHELL, made sh."""
    preview = f"cat -- {shlex.quote(os.path.join(workdir, 'preview'))}/{{1}} 2>/dev/null"
    fzf = ["env", "SHELL=/bin/sh", "fzf", "--ansi", "--layout=reverse", "--no-multi", "--delimiter=\t",
           "--with-nth=2..", f"--header-lines={headers}", f"--header={COLUMNS}", "--prompt=adopt> "]
    if client[0] >= PREVIEW_MIN_ROWS:  # below that the preview would leave the list no room
        fzf += [f"--preview={preview}", "--preview-window=down,50%,wrap"]
    if not any_usable:
        fzf.append("--prompt=nothing here can be adopted (Esc closes)> ")
    rows, choice = (shlex.quote(os.path.join(workdir, name)) for name in ("rows", "choice"))
    return f"exec {shlex.join(fzf)} <{rows} >{choice}"  # fzf draws on stderr: the popup


def _show_popup(server: Server, command: str, meanwhile: Callable[[], None]) -> None:
    """Run display-popup until it closes. tmux passes on the exit status of what the popup ran: fzf's
    1 (nothing matched) and 130 (Esc) are a person deciding, not a failure; 2 is fzf's own error."""
    returncode, stderr = server.run_while(meanwhile, "display-popup", "-E", "-w", "90%", "-h", "80%", command)
    if stderr.strip():
        raise TmuxError(f"tmux display-popup failed: {stderr.strip()}")
    if returncode not in (0, 1, 130):
        raise Refusal(f"fzf failed in the popup (exit status {returncode}); set @reptyr-picker "
                      "to menu")


def _chosen(path: str, usable: list[Candidate]) -> Candidate | None:
    """The candidate whose row fzf wrote (its first field is our index), or None."""
    try:
        with open(path) as f:
            index = f.readline().partition("\t")[0]
    except OSError:
        return None
    return usable[int(index)] if index.isdigit() and int(index) < len(usable) else None


def _preview(cand: Candidate, stats: list[proc.Stat], placement: str) -> list[str]:
    """What a person wants to know before moving it: the whole command, where it runs, what would
    happen, and its process tree."""
    try:
        stat = proc.read_stat(cand.pid)
        _, why = choose_mode(cand.pid, "auto", cand.stdio, stats)
    except (OSError, Refusal):
        return [f"process {cand.pid} has gone since the list was made"]
    lines = [f"{cand.pid}  {printable(cand.command, 60)}",  # short: fzf's scroll count sits at its end
             f"moves     {cand.mode} mode, into {PLACES.get(placement, placement)}: {why}",
             f"terminal  {_terminal(cand)}",
             f"cwd       {_cwd(cand.pid)}",
             f"running   {cand.elapsed}",
             f"command   {' '.join(proc.cmdline(cand.pid)) or '[' + stat.comm + ']'}", "",
             "process tree" + ("" if cand.stdio else " (its terminal session)") + ":"]
    return lines + _tree(cand, stat, stats)


def _terminal(cand: Candidate) -> str:
    if not cand.stdio:
        return f"/dev/{cand.tty}"
    return f"none; output goes to {proc.fd_target(cand.pid, 1)} (fds 0-2 move to the pane: -s)"


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "?"


def _tree(cand: Candidate, stat: proc.Stat, stats: list[proc.Stat]) -> list[str]:
    """The candidate's session (or, with no terminal, the candidate) and every descendant, indented
    under its parent; the candidate marked."""
    children: dict[int, list[proc.Stat]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s)
    roots = [s for s in stats if s.sid == stat.sid and s.tty_dev == stat.tty_dev] if not cand.stdio else []
    pids = {s.pid for s in roots}
    roots = [s for s in roots if s.ppid not in pids] or [stat]
    lines: list[str] = []
    stack = [(root, 0) for root in reversed(roots)]
    while stack and len(lines) < TREE_ROWS:
        node, depth = stack.pop()
        mark = "> " if node.pid == cand.pid else "  "
        lines.append(f"{mark}{'  ' * depth}{node.pid} {command_of(node)}")
        alive = [child for child in children.get(node.pid, []) if child.state not in "ZX"]
        stack += [(child, depth + 1) for child in reversed(alive)]
    if stack:
        lines.append("  …")
    return lines
