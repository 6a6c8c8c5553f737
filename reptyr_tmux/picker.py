"""`reptyr-pick`: a tmux menu of the processes one may adopt; choosing one runs `adopt`.

Everything shown comes from /proc and is attacker-controlled text: it goes through tmux_literal (no
formats, no control characters). The command an item runs holds only our own executable, options and
numbers: the pid and its start time, so a pid reused after the menu was drawn is refused.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import NamedTuple

from reptyr_tmux import proc, trust
from reptyr_tmux.errors import Refusal, ReptyrError
from reptyr_tmux.launch import python_argv
from reptyr_tmux.session import survey_session
from reptyr_tmux.survey import choose_mode, survey
from reptyr_tmux.text import from_bytes, printable, tmux_literal
from reptyr_tmux.tmux import Server

MENU_KEYS = "123456789abcdefghijklmnoprstuvwxyz"
MENU_WIDTH = 70
OPTION_DEFAULTS = {"@reptyr-placement": "window", "@reptyr-redraw": "on",
                   "@reptyr-remain-on-exit": "off", "@reptyr-pick-all": "off", "@reptyr-modes": "auto"}


class Candidate(NamedTuple):
    pid: int
    starttime: int
    tty: str
    elapsed: str
    command: str
    stdio: bool  # needs -s: it has no terminal
    refusal: str | None  # why it cannot be adopted, or None


def candidates(exclude_ttys: set[proc.Tty], include_all: bool = False, enough: int | None = None
               ) -> list[Candidate]:
    """Our user's processes (real and effective uid ours) on a terminal outside this tmux (or on any,
    with include_all: other users' stay out regardless), then processes without a terminal whose
    output goes to a file or a terminal that is gone (nohup jobs).
    With `enough`, stop checking once that many adoptable ones are found (the menu's size)."""
    me, my_family = os.geteuid(), _ancestors(os.getpid())
    boot_ticks = _uptime_ticks()
    stats = proc.all_stats()
    excluded_numbers = {tty.rdev for tty in exclude_ttys}
    seen = []
    for stat in stats:
        if stat.pid in my_family or stat.flags & proc.PF_KTHREAD or stat.state in "ZX" or stat.pid == 1:
            continue
        if stat.comm.startswith("tmux"):
            continue  # the server and its clients: adopting them into themselves makes no sense
        tty = proc.pts_path(stat.tty_dev) if stat.tty_dev else None
        if tty is None and stat.tty_dev is not None:
            continue  # a console or serial line: not ours to take
        if (stat.tty_dev in excluded_numbers and not include_all
                and proc.session_tty(stat, stats) in exclude_ttys):
            continue  # the very terminal of one of our panes, not a namesake (a container's pts)
        if (tty is None and not _looks_like_a_nohup_job(stat.pid)) or not _owned_by(stat.pid, me):
            continue
        seen.append((stat, tty))
    seen.sort(key=lambda item: (item[1] is None, item[1] or "", item[0].pid))
    found: list[Candidate] = []
    for stat, tty in seen:
        if enough is not None and sum(c.refusal is None for c in found) >= enough:
            break
        found.append(Candidate(
            pid=stat.pid, starttime=stat.starttime, tty=proc.tty_name(stat.tty_dev),
            elapsed=_elapsed(boot_ticks - stat.starttime), command=_command(stat),
            stdio=tty is None, refusal=_why_not(stat.pid, tty is None, stats)))
    found.sort(key=lambda c: (c.stdio, c.refusal is not None))
    return found


def menu_arguments(found: list[Candidate], adopt_argv: list[str]) -> list[str]:
    """display-menu arguments: a title, then name/key/command triples."""
    args = ["-T", "#[align=centre] adopt which process? "]
    usable = [c for c in found if c.refusal is None]
    for key, cand in zip(MENU_KEYS, usable):
        args += [tmux_literal(label(cand), MENU_WIDTH), key, _run_adopt(cand, adopt_argv)]
    unusable = [c for c in found if c.refusal is not None]
    if unusable:
        args += [""]  # a separator, then greyed items saying why
        for cand in unusable[:8]:
            args += ["-" + tmux_literal(f"{label(cand)} — {cand.refusal}", MENU_WIDTH), "", ""]
    hidden = max(0, len(usable) - len(MENU_KEYS)) + max(0, len(unusable) - 8)
    if hidden:
        args += ["-" + f"({hidden} more not shown)", "", ""]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reptyr-pick", description="Pick a process to adopt into tmux.")
    parser.add_argument("--all", action="store_true", help="also list processes on this tmux's panes")
    parser.add_argument("--list", action="store_true", help="print the candidates instead of a menu")
    parser.add_argument("-L", dest="socket_name")
    parser.add_argument("-S", dest="socket_path")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        server = Server(args.socket_name, args.socket_path)
        options = _options(server)
        found = candidates(pane_ttys(server), args.all or options["@reptyr-pick-all"] == "on",
                           enough=None if args.list else len(MENU_KEYS))
        if args.list:
            for cand in found:
                print(printable(f"{label(cand)}{'  [' + cand.refusal + ']' if cand.refusal else ''}"))
            return 0
        if not found:
            server.message("reptyr-tmux: no process to adopt (none of yours runs on another terminal)")
            return 0
        server.cmd("display-menu", *menu_arguments(found, _adopt_argv(args, options)))
    except ReptyrError as e:
        print(f"reptyr-pick: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def pane_ttys(server: Server) -> set[proc.Tty]:
    """This tmux's pane terminals, as terminals rather than names (names repeat across devpts)."""
    return {tty for tty in map(proc.tty_of_path, server.pane_ttys()) if tty is not None}


def _adopt_argv(args: argparse.Namespace, options: dict[str, str]) -> list[str]:
    argv = [*python_argv("reptyr_tmux"), "adopt", f"--{options['@reptyr-placement']}"]
    if options["@reptyr-redraw"] == "off":
        argv.append("--no-redraw")
    if options["@reptyr-remain-on-exit"] == "on":
        argv.append("--remain-on-exit")
    if options["@reptyr-modes"] != "auto":
        argv += ["--modes", options["@reptyr-modes"]]
    if args.socket_name:
        argv += ["-L", args.socket_name]
    if args.socket_path:
        argv += ["-S", args.socket_path]
    return argv


def _run_adopt(cand: Candidate, adopt_argv: list[str]) -> str:
    """The tmux command of one menu item: numbers and our own argv only, quoted for sh and tmux."""
    argv = [*adopt_argv, *(["-s"] if cand.stdio else []), "--start-time", str(cand.starttime), str(cand.pid)]
    shell = shlex.join(argv)
    return "run-shell -b " + _tmux_quote(shell)


def _tmux_quote(text: str) -> str:
    # Single quotes: tmux expands nothing inside them but formats, whose '#' we double.
    return "'" + text.replace("#", "##").replace("'", "'\\''") + "'"


def _options(server: Server) -> dict[str, str]:
    options = dict(OPTION_DEFAULTS)
    for line in server.cmd("show-options", "-g").splitlines():
        name, _, value = line.partition(" ")
        if name in options and value:
            options[name] = value.strip().strip('"')
    placement = options["@reptyr-placement"]
    if placement not in ("window", "split-h", "split-v", "popup"):
        raise Refusal(f"@reptyr-placement is '{placement}'; use window, split-h, split-v or popup")
    return options


def label(cand: Candidate) -> str:
    return f"{cand.pid:>7} {cand.tty:<7} {cand.elapsed:>9}  {cand.command}"


def _command(stat: proc.Stat) -> str:
    try:
        with open(f"/proc/{stat.pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        raw = b""
    text = from_bytes(raw.replace(b"\0", b" ")).strip()
    return printable(text or f"[{stat.comm}]", 120)


def _why_not(pid: int, stdio: bool, stats: list[proc.Stat]) -> str | None:
    try:
        if choose_mode(pid, "auto", stdio, stats)[0] == "session":
            survey_session(pid, stats)
        else:
            survey(pid, force_stdio=stdio, stats=stats)
    except Refusal as e:
        return str(e).split(";")[0].split(":")[0][:60]
    except OSError:
        return "gone"
    return None


def _looks_like_a_nohup_job(pid: int) -> bool:
    """Output to a file (nohup.out, a log) or to a terminal that no longer exists."""
    target = proc.fd_target(pid, 1)
    if target.startswith("/dev/pts/"):
        return target.endswith("(deleted)") or not os.path.exists(target)
    return target.startswith("/") and not target.startswith("/dev/")


def _owned_by(pid: int, uid: int) -> bool:
    """Started by `uid` and running as `uid`. Not /proc/PID's owner: that is the effective uid (root
    for another user's setuid program, such as su at its password prompt) or root when the process
    is not dumpable."""
    return trust.started_by(pid, uid)


def _ancestors(pid: int) -> set[int]:
    family = set()
    while pid > 1 and pid not in family:
        family.add(pid)
        try:
            pid = proc.read_stat(pid).ppid
        except OSError:
            break
    return family


def _uptime_ticks() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


def _elapsed(ticks: int) -> str:
    seconds = max(0, ticks // os.sysconf("SC_CLK_TCK"))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours:d}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:d}:{seconds:02d}"
    return f"{days}-{clock}" if days else clock
