"""Carry the terminal modes a program set on its old terminal into the new pane.

Cursor-key and keypad application mode, the alternate screen, mouse reporting, bracketed paste, a
hidden cursor... live in the terminal *emulator*, not in the kernel, so a new pane starts without
them and the program's first arrow key arrives in the wrong form. Where the old terminal is a tmux
pane (of any server we can reach), its mode flags are read exactly; otherwise they are inferred: a
program whose terminal is in non-canonical, no-echo mode is full-screen, so it has sent its
terminfo's smkx (keypad) and smcup (alternate screen). The modes are then written into the pane as
output, which is exactly how the program set them on its old terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import termios
import time
from collections.abc import Iterator
from typing import NamedTuple

from reptyr_tmux import proc, trust
from reptyr_tmux.mux import terminfo


class Mode(NamedTuple):
    name: str
    tmux_flag: str  # the format that reads it from a tmux pane
    sequence: str  # what a program writes to set it
    when_flag_is: str = "1"  # "0" for modes that are the *absence* of a default (cursor, wrap)


MODES = (
    Mode("alt-screen", "alternate_on", "\x1b[?1049h"),
    Mode("cursor-keys", "keypad_cursor_flag", "\x1b[?1h"),
    Mode("keypad", "keypad_flag", "\x1b="),
    Mode("mouse-standard", "mouse_standard_flag", "\x1b[?1000h"),
    Mode("mouse-button", "mouse_button_flag", "\x1b[?1002h"),
    Mode("mouse-all", "mouse_all_flag", "\x1b[?1003h"),
    Mode("mouse-utf8", "mouse_utf8_flag", "\x1b[?1005h"),
    Mode("mouse-sgr", "mouse_sgr_flag", "\x1b[?1006h"),
    Mode("bracketed-paste", "", "\x1b[?2004h"),  # tmux 3.3 has no format for it: see _detect
    Mode("insert", "insert_flag", "\x1b[4h"),
    Mode("origin", "origin_flag", "\x1b[?6h"),
    Mode("hide-cursor", "cursor_flag", "\x1b[?25l", when_flag_is="0"),
    Mode("no-wrap", "wrap_flag", "\x1b[?7l", when_flag_is="0"),
)
BY_NAME = {mode.name: mode for mode in MODES}


def parse_spec(spec: str) -> tuple[str, set[str], set[str]]:
    """--modes: "auto", "none", "a,b" (exactly these), or "+a,-b" (auto, plus a, minus b)."""
    if spec in ("auto", "none"):
        return spec, set(), set()
    words = [w.strip() for w in spec.split(",") if w.strip()]
    unknown = [w.lstrip("+-") for w in words if w.lstrip("+-") not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown terminal mode {unknown[0]!r}; known: {', '.join(BY_NAME)}")
    relative = all(w[0] in "+-" for w in words)
    plus = {w.lstrip("+") for w in words if not w.startswith("-")}
    minus = {w[1:] for w in words if w.startswith("-")}
    return ("auto" if relative else "exact"), plus, minus


def modes_of(pid: int, spec: str = "auto", tty: str | None = None) -> tuple[list[Mode], str]:
    """The modes to set for `pid`'s program in its new terminal, and where they came from.
    `tty`: its old terminal (/dev/pts/N), when it has already left it."""
    base, plus, minus = parse_spec(spec)
    if base == "none":
        return [], "none asked for"
    found, source = (set(), "asked for") if base == "exact" else _detect(pid, tty)
    names = (found | plus) - minus
    return [mode for mode in MODES if mode.name in names], source


def apply(modes: list[Mode], tty_path: str) -> None:
    """Write the modes into the new terminal as program output: its emulator takes them from there."""
    if not modes:
        return
    fd = os.open(tty_path, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(fd, "".join(mode.sequence for mode in modes).encode())
    finally:
        os.close(fd)


def _detect(pid: int, tty: str | None) -> tuple[set[str], str]:
    if tty is None:
        stat = proc.read_stat(pid)
        tty = proc.pts_path(stat.tty_dev) if stat.tty_dev else None
    if tty is None:
        return set(), "no terminal"
    shell = _foreground_is_a_line_editing_shell(pid)
    if _line_mode(tty) and not shell:  # a program reading lines sets no screen modes
        return set(), "line mode"
    # bash >= 5.1, zsh and fish turn bracketed paste on while they read a command line; tmux 3.3
    # cannot tell us (no format for it), so it is inferred from who is in the foreground.
    paste = {"bracketed-paste"} if shell else set()
    from_tmux = _from_tmux_pane(tty)
    if from_tmux is not None:
        return from_tmux | paste, "read from its tmux pane"
    if shell:
        return paste, "inferred: a shell is reading a command line"
    return _inferred(pid, tty), "inferred from its terminal settings and TERM"


LINE_EDITING_SHELLS = frozenset({"bash", "zsh", "fish"})


def _foreground_is_a_line_editing_shell(pid: int) -> bool:
    """Whether the terminal's foreground job is an interactive shell (waiting at its prompt)."""
    try:
        foreground = proc.read_stat(proc.read_stat(pid).tpgid)
    except (OSError, ValueError):
        return False
    return foreground.comm in LINE_EDITING_SHELLS and foreground.state == "S"


def _line_mode(tty: str) -> bool:
    """Canonical input or echo on: what a shell command or a plain program leaves the terminal in."""
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            return bool(termios.tcgetattr(fd)[3] & (termios.ICANON | termios.ECHO))
        finally:
            os.close(fd)
    except OSError:
        return True


def _from_tmux_pane(tty: str) -> set[str] | None:
    """Exact flags, if the terminal is a pane of a tmux server we may ask (see _askable_servers)."""
    flags = [m.tmux_flag for m in MODES if m.tmux_flag]
    fmt = "\t".join(["#{pane_tty}"] + ["#{" + f + "}" for f in flags])
    deadline = time.monotonic() + TMUX_CLIENTS_TIMEOUT_S
    for socket_fd, uid, binary in _askable_servers(_owner(tty), proc.tty_of_path(tty)):
        try:
            out = _tmux_client(binary, socket_fd, uid, ["list-panes", "-a", "-F", fmt],
                               deadline - time.monotonic())
        finally:
            os.close(socket_fd)
        for line in out.splitlines():
            fields = line.split("\t")
            if fields[0] == tty:
                values = dict(zip(flags, fields[1:]))
                return {m.name for m in MODES if m.tmux_flag and values.get(m.tmux_flag) == m.when_flag_is}
    return None


def _owner(path: str) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def _askable_servers(tty_owner: int | None, tty: proc.Tty | None) -> Iterator[tuple[int, int, str]]:
    """(socket fd, uid to ask as, its program) for each tmux server that no other user controls: a tmux
    client obeys its server, which can make it exec any program (MSG_SHELL). A server counts only if all of
    its process's uids are ours (as root: root's, or the old terminal's owner's, asked with that
    user's rights), it lives in our mount namespace (its socket path means the same file to us),
    it may hold `tty`'s master (a pane's: see _may_hold_master), and its socket is that user's own in a
    directory nobody else may write (trust.open_socket_of)."""
    me = os.geteuid()
    uids = {me} | ({tty_owner} if me == 0 and tty_owner is not None else set())
    for pid in proc.all_pids():
        try:
            if not proc.read_stat(pid).comm.startswith("tmux"):
                continue
        except (OSError, ValueError, IndexError):
            continue
        uid = next((u for u in uids if trust.runs_as(pid, u)), None)
        if uid is None or not _in_our_mount_namespace(pid) or not _may_hold_master(pid, tty):
            continue
        for path in _listening_sockets(pid):
            fd = trust.open_socket_of(path, uid)
            if fd is not None:
                yield fd, uid, _binary_of(pid)
                break


def _may_hold_master(server_pid: int, tty: proc.Tty | None) -> bool:
    """Whether the server holds the master of `tty`, as it does its panes', read from /proc without
    asking it: a server that does not is not asked (no client runs). Where the kernel does not say
    which pty a master drives (no tty-index), it may."""
    try:
        fds = proc.open_fds(server_pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.stat(f"/proc/{server_pid}/fd/{fd}").st_rdev != proc.DEV_PTMX:
                continue
        except OSError:
            continue
        held = proc.master_tty(server_pid, fd)
        if held is None or held == tty:
            return True
    return False


def _in_our_mount_namespace(pid: int) -> bool:
    """A path `pid` bound (its socket's) names the same file for us only in the same mount namespace."""
    try:
        return proc.same_namespace(pid, "mnt")
    except OSError:
        return False


TMUX_CLIENTS_TIMEOUT_S = 3.0  # for all servers together: the old terminal's owner's may never answer


def _binary_of(server_pid: int) -> str:
    """The tmux the server runs, if it is one: a client of another tmux release cannot talk to it (and
    hangs until the timeout). It is run as the server's user, the only one it is asked as, so a file of
    theirs gets nothing more. Anything else (a program merely named tmux, a deleted binary): our tmux."""
    try:
        path = os.readlink(f"/proc/{server_pid}/exe")
    except OSError:
        path = ""
    if os.path.basename(path).startswith("tmux") and os.path.isabs(path) and os.path.isfile(path):
        return path
    return shutil.which("tmux") or "tmux"


def _tmux_client(binary: str, socket_fd: int, uid: int, args: list[str], timeout: float) -> str:
    """Run a tmux client against the socket held by `socket_fd`, as `uid`, with a clean environment;
    its output, or "" if it failed or took longer than `timeout` seconds."""
    if timeout <= 0:
        return ""
    try:
        identity = trust.as_user(uid)
        result = subprocess.run([binary, "-S", f"/proc/self/fd/{socket_fd}", *args], pass_fds=[socket_fd],
                                capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd="/",
                                env=trust.CLEAN_ENV, timeout=timeout, **identity)
    except (KeyError, OSError, subprocess.SubprocessError):
        return ""
    return result.stdout if result.returncode == 0 else ""


def _listening_sockets(pid: int) -> list[str]:
    """The paths of the unix sockets `pid` listens on (a tmux server's), from /proc/net/unix."""
    inodes = {link[8:-1] for link in proc.fd_links(pid).values() if link.startswith("socket:[")}
    if not inodes:
        return []
    paths = []
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            if len(parts) >= 8 and parts[6] in inodes and int(parts[3], 16) & 0x10000:  # listening
                paths.append(parts[7])
    return paths


def _inferred(pid: int, tty: str) -> set[str]:
    """A full-screen program (no ICANON, no ECHO) sent its terminfo's smkx and smcup on start."""
    term = _environ(pid).get("TERM", "")
    smkx, smcup = terminfo.capabilities(term, "smkx", "smcup")
    found = set()
    if "\x1b[?1h" in smkx:
        found.add("cursor-keys")
    if "\x1b=" in smkx:
        found.add("keypad")
    if smcup:
        found.add("alt-screen")
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}
