"""`reptyr-tmux`: command line. Heavy modules are imported inside the command that needs them."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from reptyr_tmux import __version__
from reptyr_tmux.errors import ReptyrError, internal_error
from reptyr_tmux.frontends import status
from reptyr_tmux.frontends.status import ERROR_MS
from reptyr_tmux.text import printable

if TYPE_CHECKING:  # (argparse loads after the engine's process is started: see _engine_first)
    import argparse
    from collections.abc import Callable

    from reptyr_tmux.mux.multiplexer import Multiplexer

TOP_HELP = """\
usage: reptyr-tmux COMMAND [options]

Move a running process into tmux (or GNU screen), or onto this terminal like reptyr.

commands:
  adopt PID       move PID into a new tmux pane or GNU screen window
  pick            the tmux menu (or fzf popup) of processes to adopt (--list: as text)
  attach PID      reptyr's command line: move PID onto this terminal
  screen-pick     the picker for GNU screen, run in a screen window
  plugin-init     bind the picker to prefix + A in tmux (what reptyr.tmux runs)
  demo            adopt a throwaway job into a private tmux server, to see it work

'reptyr-tmux COMMAND --help' shows a command's options; -v, --version the version.
"""

ATTACH_USAGE = "reptyr-tmux attach [-s] [-T] [-V] PID\n       reptyr-tmux attach -l|-L [COMMAND ...]"
ATTACH_HELP = f"""\
usage: {ATTACH_USAGE}

Move a running process onto this terminal, like reptyr.

  reptyr-tmux attach [-s] [-T] [-V] PID    bring PID to this terminal
  reptyr-tmux attach -l|-L [COMMAND ...]   make a new pty, print its name, relay it here

options:
  -s   also attach fds 0, 1 and 2 when they are not a terminal (e.g. stdout is /dev/null)
  -T   take the target's whole terminal session (every process on its terminal), by taking
       the terminal's master side from whoever holds it (sshd, a terminal emulator, tmux)
  -l   create a pty pair and print the slave's name; COMMAND, if given, runs with
       REPTYR_PTY set to that name
  -L   like -l, and COMMAND also gets the pty as its terminal and stdin/stdout/stderr
  -V   print each step as it happens, with timings
  -v, --version   print the version and exit
  -h, --help      print this help and exit
"""
NO_TERMINAL = ("stdin is not a terminal: run attach from the terminal you want the process on, "
               "or use adopt")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-v", "--version"):
        print(f"reptyr-tmux {__version__}")
        return 0
    if argv[:1] in (["-h"], ["--help"]):
        print(TOP_HELP, end="")
        return 0
    if not argv or argv[0] not in COMMANDS:
        unknown = f"reptyr-tmux: unknown command '{printable(argv[0], 40)}'\n" if argv else ""
        print(unknown + TOP_HELP, end="", file=sys.stderr)
        return 2
    command, rest = _engine_first(argv[0]), argv[1:]
    if argv[0] in ("adopt", "pick") and status.FLAG in rest:
        return status.run(command, rest)
    try:
        return command(rest)
    except ReptyrError as e:
        print(f"reptyr-tmux: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # a SIGINT outside the engine's steps (those answer it with their undo)
        print("reptyr-tmux: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug of ours: one line, unless asked for the whole story
        if os.environ.get("REPTYR_TMUX_DEBUG"):
            raise
        print(f"reptyr-tmux: {internal_error(e)}", file=sys.stderr)
        return 70


MOVES = {"attach": True, "adopt": False}  # the commands that move a process: undo if we die?


def _engine_first(name: str) -> Callable[[list[str]], int]:
    """The command, for a move with the engine's process started first: python-ptrace loads there
    (~20 ms) while this one loads argparse, reads its arguments, looks at the target and opens the new
    terminal. Unused, it ends with the command, having touched nothing."""
    command = COMMANDS[name]
    if name not in MOVES:
        return command

    def started_first(argv: list[str]) -> int:
        from reptyr_tmux.engine import worker

        worker.start_early(undo_if_we_die=MOVES[name])
        try:
            return command(argv)
        finally:
            worker.end_early()
    return started_first


def pick_main() -> int:
    """The `reptyr-pick` script: `reptyr-tmux pick`."""
    return main(["pick", *sys.argv[1:]])


def _attach_parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="reptyr-tmux attach", add_help=False, usage=ATTACH_USAGE)
    parser.add_argument("-s", dest="stdio", action="store_true")
    parser.add_argument("-T", dest="steal", action="store_true")
    parser.add_argument("-V", dest="verbose", action="store_true")
    parser.add_argument("-l", dest="new_pty", action="store_true")
    parser.add_argument("-L", dest="new_pty_stdio", action="store_true")
    parser.add_argument("-v", "--version", dest="version", action="store_true")
    parser.add_argument("-h", "--help", dest="help", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def cmd_attach(argv: list[str]) -> int:
    from reptyr_tmux.errors import Refusal

    args = _attach_parser().parse_args(argv)
    if args.new_pty or args.new_pty_stdio or args.steal:
        from reptyr_tmux.engine.worker import end_early

        end_early()  # relays without the engine: it must not idle beside them for hours
    if args.help:
        print(ATTACH_HELP, end="")
        return 0
    if args.version:
        print(f"reptyr-tmux {__version__}")
        return 0
    if args.new_pty or args.new_pty_stdio:
        return _new_pty(args.rest, with_stdio=args.new_pty_stdio)
    if len(args.rest) != 1:
        raise Refusal("give exactly one process id, e.g. 'reptyr-tmux attach 1234' (see -h)")
    if args.steal:
        return _steal_here(args.rest[0], args.verbose)
    return _attach_here(args.rest[0], args.stdio, args.verbose)


def _steal_here(pid_text: str, verbose: bool) -> int:
    from reptyr_tmux.engine.steal import find_session, grab_master, silence_holders
    from reptyr_tmux.engine.survey import parse_pid
    from reptyr_tmux.frontends.ptyproxy import relay

    session = find_session(parse_pid(pid_text))
    _refuse_without_a_terminal()
    master = grab_master(session.holders[0])
    try:
        silence_holders(session, verbose)
    except BaseException:
        os.close(master)
        raise
    relay(master)
    return 0


def _attach_here(pid_text: str, stdio: bool, verbose: bool) -> int:
    from reptyr_tmux.engine.attach import attach
    from reptyr_tmux.engine.survey import parse_pid, survey
    from reptyr_tmux.engine.worker import engine_process
    from reptyr_tmux.frontends.ptyproxy import copy_window_size, relay

    pid = parse_pid(pid_text)
    if not os.isatty(0):
        survey(pid, force_stdio=stdio)  # what is wrong with the pid, if anything, says more
        _refuse_without_a_terminal()
    master, slave = os.openpty()
    try:
        copy_window_size(0, slave)
        tty, ours = os.ttyname(slave), os.fstat(slave).st_rdev
        # Apart from us: a kill -9 of this command must not leave the target half-moved; and if we die
        # before it is done, the move is undone (the relay, we, would be gone).
        with engine_process(undo_if_we_die=True, close=(master, slave)) as engine:
            done = engine.run(attach, pid, tty, force_stdio=stdio, verbose=verbose, keep_sighup_ignored=True)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # from here the target alone holds the slave: EIO on the master means it is gone
    guard = None
    if done.old_shell:  # (ptrace's modules load here only now, and only for a shell's job)
        from reptyr_tmux.engine.shell_hangup import ShellHangupGuard

        guard = ShellHangupGuard(pid, done.own_sighup, done.old_shell)
    started = _starttime(pid)
    relay(master, guard=guard)
    return _taken_from_us(pid, started, ours)


def _starttime(pid: int) -> int | None:
    from reptyr_tmux import proc

    try:
        return proc.read_stat(pid).starttime
    except OSError:
        return None


def _taken_from_us(pid: int, started: int | None, ours: int) -> int:
    """The relay ended: the program exited (0), or it lives on another terminal now — something,
    most likely another reptyr-tmux, took it from us (say so, 1)."""
    from reptyr_tmux import proc

    try:
        stat = proc.read_stat(pid)
    except OSError:
        return 0
    if stat.starttime != started or stat.state in ("Z", "X") or stat.tty_dev in (ours, None):
        return 0  # (a session leader that is exiting has already let go of its terminal)
    print(f"reptyr-tmux: process {pid} was taken to {proc.tty_name(stat.tty_dev)} by someone else (another "
          "reptyr-tmux?); this relay has nothing left to show and ends", file=sys.stderr)
    return 1


def _refuse_without_a_terminal() -> None:
    """The relay copies between the moved program and our stdin/stdout: without a terminal there,
    the program would be moved only to be hung up when our input ends."""
    from reptyr_tmux.errors import Refusal

    if not os.isatty(0):
        raise Refusal(NO_TERMINAL)


def _new_pty(command: list[str], with_stdio: bool) -> int:
    import subprocess

    from reptyr_tmux.frontends.ptyproxy import copy_window_size, relay

    master, slave = os.openpty()
    name = os.ttyname(slave)
    copy_window_size(0, slave)
    print(f"Opened a new pty: {name}", flush=True)
    if command:
        env = dict(os.environ, REPTYR_PTY=name)
        stdio = {}
        if with_stdio:
            stdio = {"stdin": slave, "stdout": slave, "stderr": slave, "start_new_session": True,
                     "preexec_fn": _take_stdin_as_ctty}
        try:
            subprocess.Popen(command, env=env, **stdio)
        except OSError as e:
            print(f"reptyr-tmux: cannot run {command[0]}: {e.strerror}", file=sys.stderr)
            return 127
        os.close(slave)  # the command holds it now; its exit ends the relay
    relay(master)
    return 0


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-L", dest="socket_name", metavar="NAME", help="tmux server socket name")
    parser.add_argument("-S", dest="socket_path", metavar="PATH", help="tmux server socket path")


def cmd_adopt(argv: list[str], server: Multiplexer | None = None) -> int:
    """`reptyr-tmux adopt`; into `server` if given (the picker's, already asked what it is)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="reptyr-tmux adopt", description="Move a running process into a new tmux pane.")
    where = parser.add_mutually_exclusive_group()
    for flag, placement in (("--window", "window"), ("--split-h", "split-h"), ("--split-v", "split-v")):
        where.add_argument(flag, dest="placement", action="store_const", const=placement)
    where.add_argument("--popup", dest="placement", action="store_const", const="popup")
    parser.add_argument("-t", dest="target", metavar="TARGET", help="tmux target session/window/pane")
    parser.add_argument("--screen", action="store_true",
                        help="open a GNU screen window instead, in the session this runs in ($STY)")
    parser.add_argument("--screen-session", metavar="SESSION",
                        help="like --screen, in the screen session named SESSION")
    _server_options(parser)
    parser.add_argument("-s", dest="stdio", action="store_true", help="also attach fds 0-2 (no tty)")
    parser.add_argument("--no-redraw", action="store_true", help="do not SIGTSTP/SIGCONT afterwards")
    parser.add_argument("--remain-on-exit", action="store_true", help="keep the pane after it exits")
    parser.add_argument("--mode", choices=("auto", "attach", "session", "steal"), default="auto",
                        help="attach: the process alone; session: its whole terminal session onto the "
                             "pane's own pty; steal: the session keeps its terminal, relayed (root, or a "
                             "terminal master you own); auto (default): session when it has company or a "
                             "shell, else attach")
    parser.add_argument("--modes", default="auto", metavar="SPEC",
                        help="terminal modes to carry: auto (read or inferred), none, a,b (exactly), "
                             "or +a,-b (auto plus a, minus b); see the README")
    parser.add_argument("--check", action="store_true", help="only say whether PID can be adopted")
    parser.add_argument("--start-time", type=int, help="refuse unless PID started at this tick (picker)")
    parser.add_argument(status.FLAG, dest="status_line", action="store_true", help=status.HELP)
    parser.add_argument("pid", metavar="PID")
    args = parser.parse_args(argv)
    return _adopt(args, server)


def _adopt(args: argparse.Namespace, server: Multiplexer | None) -> int:
    from reptyr_tmux.engine.survey import parse_pid
    from reptyr_tmux.mux.adopt import adopt, check
    from reptyr_tmux.mux.tmux import Server

    pid = parse_pid(args.pid)
    _check_modes_spec(args.modes)
    if args.check:
        server = Server(args.socket_name, args.socket_path) if _in_reach_of_tmux(args) else None
        verdict = check(pid, server, args.stdio, args.mode)
        if args.status_line and server:
            server.message(f"reptyr-tmux: {verdict}", duration_ms=ERROR_MS)
        elif not args.status_line:
            print(verdict)
        return 0
    server = server or _multiplexer(args)
    try:
        done = adopt(pid, server, placement=args.placement or "window", target=args.target,
                     redraw=not args.no_redraw, force_stdio=args.stdio, start_time=args.start_time,
                     remain_on_exit=args.remain_on_exit, mode=args.mode, modes_spec=args.modes)
    except ReptyrError as e:
        if not args.status_line:  # with it, status.run says it (once)
            server.message(f"reptyr-tmux: {e}", duration_ms=ERROR_MS)
        raise
    summary = _summary(done)
    if not args.status_line:  # by hand: the summary where the command ran, and in tmux
        print(summary)
    in_tmux_pane = done.pane.pane_id.startswith("%")
    server.message(f"reptyr-tmux: {summary}", done.pane.pane_id if in_tmux_pane else None)
    return 0


def _summary(done) -> str:
    carried = f"; terminal modes carried: {', '.join(done.terminal_modes)}" if done.terminal_modes else ""
    return (f"adopted {done.pid} ({done.name}) from {done.old_tty} into {done.pane.pane_id} "
            f"in {done.took_ms:.0f} ms, {done.mode} mode: {done.why}{carried}{done.caveat}")


def _check_modes_spec(spec: str) -> None:
    from reptyr_tmux.errors import Refusal
    from reptyr_tmux.mux.modes import parse_spec

    try:
        parse_spec(spec)
    except ValueError as e:
        raise Refusal(f"--modes: {e}") from None


def _multiplexer(args: argparse.Namespace):
    if args.screen or args.screen_session:
        from reptyr_tmux.mux.screen import ScreenSession

        return ScreenSession(args.screen_session)
    from reptyr_tmux.mux.tmux import Server

    return Server(args.socket_name, args.socket_path, args.target)


def cmd_screen_pick(argv: list[str]) -> int:
    from reptyr_tmux.frontends.screen_pick import main as screen_pick_main

    return screen_pick_main(argv)


def _in_reach_of_tmux(args: argparse.Namespace) -> bool:
    return bool(args.socket_name or args.socket_path or os.environ.get("TMUX"))


def cmd_pick(argv: list[str]) -> int:
    from reptyr_tmux.frontends.picker import main as pick_main

    return pick_main(argv)


def cmd_plugin_init(argv: list[str]) -> int:
    from reptyr_tmux.frontends.plugin import init

    return init(argv)


def _take_stdin_as_ctty() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def cmd_demo(argv: list[str]) -> int:
    from reptyr_tmux.frontends.demo import run_demo

    return run_demo(argv)


COMMANDS = {"attach": cmd_attach, "adopt": cmd_adopt, "pick": cmd_pick, "plugin-init": cmd_plugin_init,
            "screen-pick": cmd_screen_pick, "demo": cmd_demo}
