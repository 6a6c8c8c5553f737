"""`reptyr-tmux`: command line. Heavy modules are imported inside the command that needs them."""

from __future__ import annotations

import argparse
import os
import sys

from reptyr_tmux import __version__
from reptyr_tmux.errors import ReptyrError

ATTACH_HELP = """\
Move a running process onto a terminal, like reptyr.

  reptyr-tmux attach [-s] [-T] [-V] PID    bring PID to this terminal
  reptyr-tmux attach -l|-L [COMMAND ...]   make a new pty, print its name, relay it here

options:
  -s   also attach fds 0, 1 and 2 when they are not a terminal (e.g. stdout is /dev/null)
  -T   take the target's whole terminal session (not available yet)
  -l   create a pty pair and print the slave's name; COMMAND, if given, runs with
       REPTYR_PTY set to that name
  -L   like -l, and COMMAND also gets the pty as its terminal and stdin/stdout/stderr
  -V   print each step as it happens, with timings
  -v   print the version and exit
  -h   print this help and exit
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-v", "--version"):
        print(f"reptyr-tmux {__version__}")
        return 0
    commands = {"attach": cmd_attach, "demo": cmd_demo}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: reptyr-tmux {attach,demo} ...  (reptyr-tmux COMMAND -h for more)",
              file=sys.stdout if argv[:1] in (["-h"], ["--help"]) else sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    try:
        return commands[argv[0]](argv[1:])
    except ReptyrError as e:
        print(f"reptyr-tmux: {e}", file=sys.stderr)
        return e.exit_code


def _attach_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reptyr-tmux attach", add_help=False, usage=ATTACH_HELP)
    parser.add_argument("-s", dest="stdio", action="store_true")
    parser.add_argument("-T", dest="steal", action="store_true")
    parser.add_argument("-V", dest="verbose", action="store_true")
    parser.add_argument("-l", dest="new_pty", action="store_true")
    parser.add_argument("-L", dest="new_pty_stdio", action="store_true")
    parser.add_argument("-v", dest="version", action="store_true")
    parser.add_argument("-h", dest="help", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def cmd_attach(argv: list[str]) -> int:
    from reptyr_tmux.errors import Refusal

    args = _attach_parser().parse_args(argv)
    if args.help:
        print(ATTACH_HELP, end="")
        return 0
    if args.version:
        print(f"reptyr-tmux {__version__}")
        return 0
    if args.new_pty or args.new_pty_stdio:
        return _new_pty(args.rest, with_stdio=args.new_pty_stdio)
    if args.steal:
        raise Refusal("-T (take the whole terminal session) is not supported yet; without -T, "
                      "a process that is alone in its job can be moved")
    if len(args.rest) != 1:
        raise Refusal("give exactly one process id, e.g. 'reptyr-tmux attach 1234' (see -h)")
    return _attach_here(args.rest[0], args.stdio, args.verbose)


def _attach_here(pid_text: str, stdio: bool, verbose: bool) -> int:
    from reptyr_tmux.attach import attach
    from reptyr_tmux.ptyproxy import copy_window_size, relay
    from reptyr_tmux.survey import parse_pid

    pid = parse_pid(pid_text)
    master, slave = os.openpty()
    try:
        copy_window_size(0, slave)
        attach(pid, os.ttyname(slave), force_stdio=stdio, verbose=verbose)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # from here the target alone holds the slave: EIO on the master means it is gone
    relay(master)
    return 0


def _new_pty(command: list[str], with_stdio: bool) -> int:
    import subprocess

    from reptyr_tmux.ptyproxy import copy_window_size, relay

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


def _take_stdin_as_ctty() -> None:
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def cmd_demo(argv: list[str]) -> int:
    from reptyr_tmux.demo import run_demo

    return run_demo(argv)
