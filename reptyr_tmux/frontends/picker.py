"""`reptyr-pick`: a tmux menu of the processes one may adopt; choosing one runs `adopt` (fzf_popup.py: the
same rows in an fzf popup, by @reptyr-picker).

Everything shown comes from /proc and is attacker-controlled text: it goes through tmux_literal (no
formats, no control characters). The command an item runs holds only our own executable, options and
numbers: the pid and its start time, so a pid reused after the menu was drawn is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat as stat_module
from collections.abc import Callable
from typing import NamedTuple

from reptyr_tmux import proc, trust
from reptyr_tmux.engine.survey import choose_mode, survey
from reptyr_tmux.errors import Refusal
from reptyr_tmux.frontends import status
from reptyr_tmux.frontends.commandline import recognisable
from reptyr_tmux.launch import python_argv
from reptyr_tmux.mux.tmux import MENUS_FROM, Server
from reptyr_tmux.text import from_bytes, printable, tmux_literal, whole_words

MENU_KEYS = "123456789abcdefghijklmnoprstuvwxyz"
MENU_WIDTH = 70
MAX_GREYED = 8  # rows of processes that cannot be adopted, greyed with the reason
REASON_WIDTH = 30  # a greyed row's reason, in whole words; the command line gives way to it
YOUNG_TICKS = os.sysconf("SC_CLK_TCK")  # children younger than a second are a loop's steps, gone soon
SSH_CLIENTS = frozenset({"ssh", "mosh-client"})  # the user's way out to (or in from) elsewhere
OPTION_DEFAULTS = {"@reptyr-placement": "window", "@reptyr-redraw": "on",
                   "@reptyr-remain-on-exit": "off", "@reptyr-pick-all": "off", "@reptyr-modes": "auto",
                   "@reptyr-picker": "auto", "@reptyr-mode": "auto"}
MODES = ("auto", "attach", "session", "steal")  # adopt --mode
PICKERS = ("menu", "fzf", "auto")  # auto: the fzf popup where it works and the menu would be cut short


class Candidate(NamedTuple):
    pid: int
    starttime: int
    tty: str
    elapsed: str
    command: str
    stdio: bool  # needs -s: it has no terminal
    refusal: str | None  # why it cannot be adopted (a few words), or None
    mode: str  # how it would move: what survey.choose_mode says ("-" when refused)


class Scan(NamedTuple):
    """One /proc snapshot and what the filters need from it."""

    stats: list[proc.Stat]
    by_pid: dict[int, proc.Stat]
    seats: set[int]  # sessions with a tmux client on their terminal: where the user sits
    now_ticks: int


def candidates(exclude_ttys: set[proc.Tty], include_all: bool = False, enough: int | None = None,
               mode: str = "auto") -> list[Candidate]:
    """Our user's processes (real and effective uid ours) on a terminal outside this tmux (or on any,
    with include_all: other users' stay out regardless), then processes without a terminal whose
    output goes to a file or a terminal that is gone (nohup jobs).
    With `enough`, stop checking once that many adoptable ones are found (the menu's size). Each is
    judged as adopt --mode `mode` would move it."""
    me, my_family = os.geteuid(), _ancestors(os.getpid())
    stats = proc.all_stats()
    excluded_numbers = {tty.rdev for tty in exclude_ttys}
    scan = Scan(stats, {s.pid: s for s in stats}, _seats(stats), _uptime_ticks())
    seen = []
    for stat in stats:
        if stat.pid in my_family or not _worth_a_look(stat, scan):
            continue
        tty = proc.pts_path(stat.tty_dev) if stat.tty_dev else None
        if tty is None and stat.tty_dev is not None:
            continue  # a console or serial line: not ours to take
        if (stat.tty_dev in excluded_numbers and not include_all
                and proc.session_tty(stat, stats) in exclude_ttys):
            continue  # the very terminal of one of our panes, not a namesake (a container's pts)
        if (tty is None and not _looks_like_a_nohup_job(stat, scan)) or not _owned_by(stat.pid, me):
            continue
        seen.append((stat, tty))
    seen.sort(key=lambda item: (item[1] is None, item[1] or "", item[0].pid))
    found: list[Candidate] = []
    for stat, tty in seen:
        if enough is not None and sum(c.refusal is None for c in found) >= enough:
            break
        how, refusal = _verdict(stat.pid, tty is None, stats, mode)
        found.append(Candidate(
            pid=stat.pid, starttime=stat.starttime, tty=proc.tty_name(stat.tty_dev),
            elapsed=_elapsed(scan.now_ticks - stat.starttime), command=command_of(stat),
            stdio=tty is None, refusal=refusal, mode=how))
    found.sort(key=lambda c: (c.stdio, c.refusal is not None))
    return found


def _worth_a_look(stat: proc.Stat, scan: Scan) -> bool:
    """Not a kernel thread, zombie or init; not the way the user reaches this tmux (a tmux client,
    its shell, an ssh client); not a child that will be gone in a moment (a loop's `sleep 0.2`)."""
    if stat.flags & proc.PF_KTHREAD or stat.state in "ZX" or stat.pid == 1:
        return False
    if stat.comm.startswith("tmux") or stat.comm in SSH_CLIENTS or stat.sid in scan.seats:
        return False  # the tmux server, clients and their sessions: adopting them into tmux is absurd
    parent = scan.by_pid.get(stat.ppid)
    young = scan.now_ticks - stat.starttime < YOUNG_TICKS
    return not (young and stat.tty_dev and parent is not None and parent.tty_dev == stat.tty_dev)


def _seats(stats: list[proc.Stat]) -> set[int]:
    """Sessions whose terminal shows a tmux client: moving them would move the client into tmux."""
    return {s.sid for s in stats if s.comm.startswith("tmux") and s.tty_dev is not None}


def menu_arguments(found: list[Candidate], item_command: Callable[[Candidate], str],
                   client: tuple[int, int] = (999, 999)) -> list[str]:
    """display-menu arguments: a title, then name/key/command triples. tmux shows no menu at all
    that is taller or wider than the client (rows, columns), so the rows are cut to fit it."""
    width = min(MENU_WIDTH, client[1] - 4)
    usable, unusable = _menu_rows(found, client)
    args = ["-T", "#[align=centre] adopt which process? "]
    for key, cand in zip(MENU_KEYS, usable):
        args += [tmux_literal(label(cand), width), key, item_command(cand)]
    if unusable:
        args += [""]  # a separator, then greyed items saying why
        for cand in unusable:
            args += ["-" + tmux_literal(refused_row(cand, width), width), "", ""]
    hidden = len(found) - len(usable) - len(unusable)
    if hidden:
        args += ["-" + f"({hidden} more not shown: reptyr-tmux pick --list shows all)", "", ""]
    return args


def _menu_rows(found: list[Candidate], client: tuple[int, int]) -> tuple[list[Candidate], list[Candidate]]:
    """The adoptable and the greyed rows that fit the menu: one key each, the client's height."""
    room = client[0] - 2 - 1  # the border, and a line saying how many were left out
    usable = [c for c in found if c.refusal is None][: min(len(MENU_KEYS), room)]
    unusable = [c for c in found if c.refusal is not None][: max(0, min(MAX_GREYED, room - len(usable) - 1))]
    return usable, unusable


def menu_fits(found: list[Candidate], client: tuple[int, int]) -> bool:
    usable, unusable = _menu_rows(found, client)
    return len(usable) + len(unusable) == len(found)


def main(argv: list[str]) -> int:
    """`reptyr-tmux pick` (errors are raised: cli.main reports them)."""
    parser = argparse.ArgumentParser(prog="reptyr-tmux pick", description="Pick a process to adopt into "
                                     "tmux: a menu (or an fzf popup, see @reptyr-picker) of your "
                                     "processes on terminals outside this tmux.")
    parser.add_argument("--all", action="store_true", help="also list processes on this tmux's panes")
    parser.add_argument("--list", action="store_true", help="print the candidates instead of a menu")
    parser.add_argument("-L", dest="socket_name", metavar="NAME", help="tmux server socket name")
    parser.add_argument("-S", dest="socket_path", metavar="PATH", help="tmux server socket path")
    parser.add_argument("--numbered", action="store_true", help="a numbered list on this terminal instead "
                        "of a menu: what prefix + A opens in a new window on tmux before 3.0 (no menus)")
    parser.add_argument(status.FLAG, dest="status_line", action="store_true", help=status.HELP)
    args = parser.parse_args(argv)
    server = Server(args.socket_name, args.socket_path)
    options = _options(server)
    if server.version() < MENUS_FROM and not (args.list or args.numbered):
        _open_numbered_window(server, args)
        return 0
    popup_possible = not (args.list or args.numbered) and _popup_possible(options["@reptyr-picker"], server)
    found = candidates(pane_ttys(server), args.all or options["@reptyr-pick-all"] == "on",
                       enough=None if args.list or popup_possible else len(MENU_KEYS),
                       mode=options["@reptyr-mode"])
    if args.numbered:
        from reptyr_tmux.frontends import numbered  # it builds on this module

        cand = numbered.choose(found, f"Adopt which process? (tmux {server.version_text()} has no menus: "
                               "display-menu came in tmux 3.0)")
        return 0 if cand is None else numbered.adopt(cand, _adopt_args(args, options))
    if args.list:
        for cand in found:
            print(printable(f"{label(cand)}{'  [' + cand.refusal + ']' if cand.refusal else ''}"))
        return 0
    if not found:
        server.message("reptyr-tmux: no process to adopt (none of yours runs on another terminal)")
        return 0
    client = _client_size(server)
    adopt_args = _adopt_args(args, options)
    from reptyr_tmux.engine.worker import end_early, start_early

    start_early()  # the engine's process: ptrace's modules load while the person chooses
    try:
        if popup_possible and (options["@reptyr-picker"] == "fzf" or not menu_fits(found, client)):
            chosen = _pick_in_popup(server, found, client, options)
        else:
            chosen = _pick_in_menu(server, found, client, adopt_args)
        if chosen is not None:  # here, with all loaded: no Python starts after the choice
            from reptyr_tmux.frontends.cli import cmd_adopt

            status.run(lambda argv: cmd_adopt(argv, server), adopt_command(chosen, adopt_args))
    finally:
        end_early()  # still unused (nothing chosen, or a failure on the way): it ends here
    return 0


def _pick_in_menu(server: Server, found: list[Candidate], client: tuple[int, int], adopt_args: list[str]
                  ) -> Candidate | None:
    """tmux's menu; the candidate chosen in it, or None (nothing, or its item adopts it on its own)."""
    from reptyr_tmux.frontends.menu_choice import MenuChoice

    ourselves = python_argv("reptyr_tmux")
    with MenuChoice(server) as choice:
        def item_command(cand: Candidate) -> str:
            return choice.item_command(cand.pid, [*ourselves, "adopt", *adopt_command(cand, adopt_args)])

        server.cmd_while(lambda: _load_the_adoption(server), "display-menu",
                         *menu_arguments(found, item_command, client))
        pid = choice.taken()
    return next((cand for cand in found if cand.pid == pid), None)


def _load_the_adoption(server: Server) -> None:
    """What the adoption will need, loaded and asked while the person chooses."""
    import reptyr_tmux.mux.adopt  # noqa: F401

    server.server_pid()  # the adoption refuses to move tmux itself


def _popup_possible(picker: str, server: Server) -> bool:
    if picker == "menu":
        return False  # not even fzf_popup's import
    from reptyr_tmux.frontends import fzf_popup

    return fzf_popup.wanted(picker, server)


def _pick_in_popup(server: Server, found: list[Candidate], client: tuple[int, int], options: dict[str, str]
                   ) -> Candidate | None:
    """The fzf popup; the candidate chosen there, or None."""
    from reptyr_tmux.frontends import fzf_popup

    return fzf_popup.choose(server, found, client, options["@reptyr-placement"],
                            meanwhile=lambda: _load_the_adoption(server))


def _open_numbered_window(server: Server, args: argparse.Namespace) -> None:
    """tmux before 3.0 has no display-menu: the list goes into a window of its own, as for GNU screen;
    the window closes once a number (or Enter) is typed."""
    where = [*(["-L", args.socket_name] if args.socket_name else []),
             *(["-S", args.socket_path] if args.socket_path else [])]
    pick = [*python_argv("reptyr_tmux"), "pick", "--numbered", *(["--all"] if args.all else []), *where]
    server.cmd("new-window", "-n", "adopt", shlex.join(pick))


def _client_size(server: Server) -> tuple[int, int]:
    size = server.cmd("display-message", "-p", "#{client_height} #{client_width}")
    rows, _, cols = size.strip().partition(" ")
    return (int(rows), int(cols)) if rows.isdigit() and cols.isdigit() else (24, 80)


def pane_ttys(server: Server) -> set[proc.Tty]:
    """This tmux's pane terminals, as terminals rather than names (names repeat across devpts)."""
    return {tty for tty in map(proc.tty_of_path, server.pane_ttys()) if tty is not None}


def _adopt_args(args: argparse.Namespace, options: dict[str, str]) -> list[str]:
    """`reptyr-tmux adopt`'s arguments as the options say (the candidate's own come last)."""
    argv = [status.FLAG, f"--{options['@reptyr-placement']}"]
    if options["@reptyr-redraw"] == "off":
        argv.append("--no-redraw")
    if options["@reptyr-remain-on-exit"] == "on":
        argv.append("--remain-on-exit")
    if options["@reptyr-modes"] != "auto":
        argv += ["--modes", options["@reptyr-modes"]]
    if options["@reptyr-mode"] != "auto":
        argv += ["--mode", options["@reptyr-mode"]]
    if args.socket_name:
        argv += ["-L", args.socket_name]
    if args.socket_path:
        argv += ["-S", args.socket_path]
    return argv


def adopt_command(cand: Candidate, adopt_args: list[str]) -> list[str]:
    """`reptyr-tmux adopt`'s arguments for `cand`: our own options and numbers only; its start time, so a
    reused pid is refused."""
    return [*adopt_args, *(["-s"] if cand.stdio else []), "--start-time", str(cand.starttime), str(cand.pid)]


def _options(server: Server) -> dict[str, str]:
    options = dict(OPTION_DEFAULTS)
    for line in server.cmd("show-options", "-g").splitlines():
        name, _, value = line.partition(" ")
        if name in options and value:
            options[name] = value.strip().strip('"')
    placement = options["@reptyr-placement"]
    if placement not in ("window", "split-h", "split-v", "popup"):
        raise Refusal(f"@reptyr-placement is '{placement}'; use window, split-h, split-v or popup")
    if options["@reptyr-mode"] not in MODES:
        raise Refusal(f"@reptyr-mode is '{options['@reptyr-mode']}'; use auto, attach, session or steal")
    if options["@reptyr-picker"] not in PICKERS:
        raise Refusal(f"@reptyr-picker is '{options['@reptyr-picker']}'; use menu, fzf or auto")
    return options


def label(cand: Candidate) -> str:
    return f"{cand.pid:>7} {cand.tty:<7} {cand.elapsed:>9}  {cand.mode:<7} {cand.command}"


def refused_row(cand: Candidate, width: int) -> str:
    """The whole reason, and as much of the row as fits before it."""
    reason = f" — {cand.refusal}"
    return printable(label(cand), width - len(reason)) + reason


def command_of(stat: proc.Stat) -> str:
    try:
        with open(f"/proc/{stat.pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        raw = b""
    argv = [from_bytes(arg) for arg in raw.split(b"\0") if arg]
    return printable(recognisable(argv).strip() or f"[{stat.comm}]", 120)


def _verdict(pid: int, stdio: bool, stats: list[proc.Stat], requested: str) -> tuple[str, str | None]:
    """(the mode it would move in, None) or ("-", why it cannot be adopted, in a few words)."""
    try:
        mode, _ = choose_mode(pid, requested, stdio, stats)
        if mode == "session":
            from reptyr_tmux.engine.session import survey_session  # (a listing without one never loads it)

            survey_session(pid, stats)
        elif mode == "attach":  # steal (only when asked for): whether its terminal can be taken is
            survey(pid, force_stdio=stdio, stats=stats)  # seen then
    except Refusal as e:
        return "-", e.short or whole_words(_without_subject(str(e).split(";")[0]), REASON_WIDTH)
    except OSError:
        return "-", "gone"
    return mode, None


def _without_subject(sentence: str) -> str:
    """"process 12 (x) is traced" -> "is traced": the row already shows which process."""
    return re.sub(r"^process \d+ (\(.*?\) )?", "", sentence)


def _looks_like_a_nohup_job(stat: proc.Stat, scan: Scan) -> bool:
    """Left behind by a session that ended (its leader gone, itself re-parented to init or a
    subreaper), with its output going to a file (nohup.out, a log) or to a terminal that is gone.
    A daemon leads its own session; a live shell's job still has the shell's terminal."""
    leader, parent = scan.by_pid.get(stat.sid), scan.by_pid.get(stat.ppid)
    if (leader is not None and leader.state not in "ZX") or (parent is not None and parent.sid == stat.sid):
        return False
    target = proc.fd_target(stat.pid, 1)
    if target.startswith("/dev/pts/"):
        return target.endswith("(deleted)") or not os.path.exists(target)
    return _is_regular_file(f"/proc/{stat.pid}/fd/1")


def _is_regular_file(path: str) -> bool:
    try:
        return stat_module.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


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
