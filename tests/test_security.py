"""Another user is an attacker: nothing they control ever runs with our rights.

Each test creates a real second user (tests/users.py) who plays the attacker with a real program:
a fake tmux server, a directory-swapping loop, a setuid program at its prompt.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import CLI, ECHO, VICTIMS, Terminal, Tmux, build_c
from realssh import SYSTEM_PYTHON, spawn_on_pty
from test_steal import SshdLike
from users import User, as_user, give, need_root_and, new_user, user_env, user_popen

from reptyr_tmux import proc
from reptyr_tmux.mux import terminfo
from reptyr_tmux.native import holder, native_relay

CURSES = ["env", "TERM=xterm", sys.executable, str(VICTIMS / "curses_screen.py")]
SHELL = ["env", "PS1=$ ", "TERM=xterm", "bash", "--norc", "--noprofile", "-i"]


@pytest.fixture
def attacker() -> Iterator[User]:
    """A fresh user for each test: nothing of one attack is left for the next."""
    need_root_and("useradd", "userdel")
    with new_user("rta") as user:
        yield user


def new_directory(user: User, path: Path) -> Path:
    path.mkdir()
    return give(user, path, 0o755)


def adopt(tmux: Tmux, pid: int) -> str:
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", str(pid)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def planted_program(user: User, name: str) -> tuple[Path, Path]:
    """An executable script of the attacker's that records who ran it in a marker file."""
    marker = user.home / f"{name}.ran"
    script = user.home / name
    script.write_text(f'#!/bin/sh\necho "uid=$(id -u) groups=$(id -G)" >> {marker}\n')
    give(user, script, 0o755)
    return script, marker


# --- 1. a fake tmux server ------------------------------------------------------------------------


class FakeServer(NamedTuple):
    socket: Path
    marker: Path  # appears when a client obeyed its MSG_SHELL


@contextlib.contextmanager
def a_fake_tmux_server(attacker: User, holding: tuple[int, ...] = ()) -> Iterator[FakeServer]:
    """The attacker's fake tmux server, named like one, on a socket anyone may connect to, telling
    every client to exec a planted script; `holding`: pty masters it keeps open, as a server does its
    panes'. Proven to work: a real tmux client (run with the attacker's own rights) obeys it before
    the test starts."""
    program = shutil.copy(VICTIMS / "fake_tmux_server.py", attacker.home)
    evil, marker = planted_program(attacker, "evil.sh")
    socket = attacker.home / "tmux.sock"
    server = user_popen(attacker, [SYSTEM_PYTHON, program, str(socket), str(evil)], stdout=subprocess.PIPE,
                        text=True, pass_fds=holding)
    try:
        assert server.stdout.readline() == "listening\n"
        control = as_user(attacker, ["tmux", "-S", str(socket), "list-panes"])
        assert marker.read_text() == f"uid={attacker.uid} groups={attacker.gid}\n", control
        marker.unlink()
        yield FakeServer(socket, marker)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()


@pytest.fixture
def fake_tmux_server(attacker: User) -> Iterator[FakeServer]:
    with a_fake_tmux_server(attacker) as server:
        yield server


def test_a_fake_tmux_server_never_makes_root_run_its_program(spawn, tmux, fake_tmux_server):
    """Root adopts a full-screen program and a shell at its prompt (both look for the old terminal's
    tmux pane): the attacker's server is never asked."""
    full_screen = spawn.on_pty(CURSES, ready="CURSES-SCREEN")
    out = adopt(tmux, full_screen.pid)
    assert "cursor-keys" in out  # inferred instead
    shell = spawn.on_pty(SHELL, ready="$ ")
    adopt(tmux, shell.pid)
    assert not fake_tmux_server.marker.exists(), fake_tmux_server.marker.read_text()


def test_the_old_terminals_owner_is_asked_only_with_that_users_rights(spawn, tmux, attacker):
    """When the old terminal belongs to the attacker and their server holds its master (as it would a
    pane's), that server may describe it, but the client runs as them (their uid and group, no
    supplementary groups): what it runs gets no more."""
    victim = spawn.on_pty(CURSES, ready="CURSES-SCREEN")
    tty = proc.pts_path(victim.stat().tty_dev)
    shutil.chown(tty, attacker.uid)
    with a_fake_tmux_server(attacker, holding=(victim.term.master,)) as server:
        adopt(tmux, victim.pid)
        assert server.marker.read_text() == f"uid={attacker.uid} groups={attacker.gid}\n"


def test_a_server_that_holds_no_master_of_the_terminal_is_not_asked(spawn, tmux, attacker, fake_tmux_server):
    """Even a server the old terminal's owner runs is asked only if it holds that terminal's master (a
    pane's): an ssh or xterm terminal is no tmux pane, so no client runs at all."""
    victim = spawn.on_pty(CURSES, ready="CURSES-SCREEN")
    shutil.chown(proc.pts_path(victim.stat().tty_dev), attacker.uid)
    out = adopt(tmux, victim.pid)
    assert "cursor-keys" in out  # inferred instead
    assert not fake_tmux_server.marker.exists(), fake_tmux_server.marker.read_text()


def test_an_inherited_TMUX_of_another_user_is_not_followed(spawn, fake_tmux_server):
    """Root after su (without -) in the attacker's pane has their $TMUX: adopt and the picker refuse
    with a sentence instead of running a tmux client against it."""
    victim = spawn.on_pty(ECHO)
    env = dict(os.environ, TMUX=f"{fake_tmux_server.socket},4242,0")
    for argv in (["adopt", str(victim.pid)], ["pick", "--list"]):
        result = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=30, env=env)
        assert result.returncode == 2 and "$TMUX names a tmux server that is not yours" in result.stderr
        assert not fake_tmux_server.marker.exists(), fake_tmux_server.marker.read_text()
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")


def test_a_real_tmux_pane_of_ours_is_still_read_exactly(spawn, tmux, fake_tmux_server):
    """The fix keeps reading our own servers: a curses program in our other server's pane."""
    other = Tmux(f"{tmux.socket}-source")
    other("-f", "/dev/null", "new-session", "-d", "-s", "src", "-x", "80", "-y", "24", *CURSES, "--mouse")
    try:
        other.wait_screen("src", "CURSES-SCREEN ready")
        out = adopt(tmux, int(other.pane("src", "#{pane_pid}")))
        assert "mouse" in out  # only a pane's flags tell mouse reporting
    finally:
        other.kill()
    assert not fake_tmux_server.marker.exists()


def test_terminfo_comes_from_the_system_only(attacker, tmp_path, monkeypatch):
    """TERM from the target's environ is a name, not a path; tput runs with a clean environment,
    so a TERMINFO in ours (su without -) pointing at the attacker's entries is not read."""
    source = tmp_path / "xterm.src"
    source.write_text("xterm|the attacker's xterm,\n\tsmcup=\\E[?47h,\n"
                      "attackterm|a name only the attacker's database has,\n\tsmcup=\\E[?47h,\n")
    database = attacker.home / "terminfo"
    subprocess.run(["tic", "-o", str(database), str(source)], check=True, capture_output=True)
    monkeypatch.setenv("TERMINFO", str(database))
    planted = subprocess.run(["tput", "-T", "xterm", "smcup"], capture_output=True, text=True).stdout
    assert planted == "\x1b[?47h"  # what a tput that inherits our environment reads
    assert terminfo.capabilities("xterm", "smcup")[0].startswith("\x1b[?1049h")  # the system's xterm
    assert terminfo.capabilities("attackterm", "smcup") == [""]  # tput, asked for a name we lack, neither
    for bad in ("../../tmp/x", "/etc/passwd", ".hidden", "", "a b", "x\n", "x" * 300):
        assert terminfo.capabilities(bad, "smcup") == [""]


# --- 2. the cache of the programs tmux runs -----------------------------------------------------

ADOPTIONS = 20


def test_the_cache_skips_every_place_someone_else_could_change(attacker, tmp_path, private_tmp,
                                                               monkeypatch):
    """A cache folder under sticky world-writable /tmp, inside another user's directory, below a
    group-writable one of ours, or reached through a symlink into such a place, is not used: the
    next one is (here ~/.cache's stand-in), or none, and the callers then use the Python holder."""
    group_writable = private_tmp / "shared"
    group_writable.mkdir()
    group_writable.chmod(0o775)
    link = private_tmp / "link"
    link.symlink_to(attacker.home)
    fallback = private_tmp / "cache"
    monkeypatch.delenv(holder.FORCE_PYTHON_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(fallback))
    for unsafe in (tmp_path, attacker.home, group_writable / "run", link):
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(unsafe))
        assert holder.holder_elf_path() == str(fallback / holder.CACHE_DIR_NAME / holder.cache_name(
            "holder", holder.holder_elf())), unsafe
        monkeypatch.setenv("XDG_CACHE_HOME", str(unsafe))
        assert holder.holder_argv(1) is None, unsafe
        monkeypatch.setenv("XDG_CACHE_HOME", str(fallback))
    name = holder.CACHE_DIR_NAME
    untouched = (tmp_path / name, attacker.home / name, group_writable / "run")
    assert not any(p.exists() for p in untouched), "created a folder in an unsafe place"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_tmp / "run"))  # a private one is used
    assert holder.holder_elf_path().startswith(str(private_tmp / "run" / holder.CACHE_DIR_NAME) + "/")


def test_a_swapped_cache_folder_never_makes_root_run_a_planted_program(spawn, tmux, attacker, tmp_path):
    """Root with XDG_RUNTIME_DIR inside the attacker's directory (su without -): while the attacker
    swaps our cache folder (there from an earlier adoption) with theirs (renameat2 RENAME_EXCHANGE)
    in a loop, 20 adoptions (attach mode's holder and steal mode's relay) all succeed, and their
    planted holder and relay never run."""
    runtime = new_directory(attacker, attacker.home / "run")
    decoy = new_directory(attacker, runtime / "decoy")
    ours = runtime / holder.CACHE_DIR_NAME  # root's folder from an earlier adoption, genuine files in it
    ours.mkdir(mode=0o700)
    planted, marker = planted_program(attacker, "planted.sh")
    for prefix, image in (("holder", holder.holder_elf()), ("relay", native_relay.relay_elf())):
        (ours / holder.cache_name(prefix, image)).write_bytes(image)
        (ours / holder.cache_name(prefix, image)).chmod(0o700)
        as_user(attacker, ["cp", str(planted), str(decoy / holder.cache_name(prefix, image))], check=True)
    stop = attacker.home / "stop"
    swap_loop = shutil.copy(VICTIMS / "swap_dirs.py", attacker.home)
    swapper = user_popen(attacker, [SYSTEM_PYTHON, swap_loop, str(ours), str(decoy), str(stop), "120"],
                         stdout=subprocess.PIPE, text=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "REPTYR_TMUX_"))}
    env.update(XDG_RUNTIME_DIR=str(runtime), REPTYR_TMUX_DEBUG="1")
    sessions = SshdLike(tmp_path, sessions=ADOPTIONS // 2)
    failed, planted_ran = [], []
    try:
        assert swapper.stdout.readline() == "swapping\n"
        for n in range(ADOPTIONS):
            if n % 2:  # a shell's job, moved with its session behind the relay
                sessions.type(n // 2, " ".join(ECHO))
                sessions.wait_log(n // 2, "ready")
                pid, mode = sessions.job(n // 2), ["--mode", "steal"]
            else:  # alone on its terminal: the holder
                pid, mode = spawn.on_pty(ECHO).pid, []
            before = marker.read_text() if marker.exists() else ""
            result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", *mode, str(pid)],
                                    capture_output=True, text=True, timeout=60, env=env)
            if result.returncode != 0:
                failed.append(result.stderr.strip())
            if (marker.read_text() if marker.exists() else "") != before:
                planted_ran.append(n)
        stop.touch()
        tried, swaps = map(int, swapper.communicate(timeout=30)[0].split())
        panes = map(int, tmux("list-panes", "-a", "-F", "#{pane_pid}").split())
        pane_programs = sorted({os.readlink(f"/proc/{pid}/exe") for pid in panes})
    finally:
        sessions.close()
    print(f"{swaps} of {tried} swaps done; the planted program ran in {len(planted_ran)} of {ADOPTIONS} "
          f"adoptions; pane programs: {pane_programs}")
    assert swaps > ADOPTIONS, "the swap loop did not run"
    assert not planted_ran, f"the planted program ran in adoptions {planted_ran}: {marker.read_text()}"
    assert not failed, failed
    assert not any(p.startswith(str(attacker.home.parent)) for p in pane_programs)


# --- 6. the picker as root ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def setuid_reader_build(tmp_path_factory) -> str:
    return build_c(tmp_path_factory, "setuid_reader.c")


def picked(tmux: Tmux, *extra: str) -> set[int]:
    result = subprocess.run([*CLI, "pick", "--list", "-L", tmux.socket, *extra], capture_output=True,
                            text=True, timeout=30, check=True)
    return {int(line.split()[0]) for line in result.stdout.splitlines()}


def test_root_picker_lists_only_roots_own_processes(spawn, tmux, attacker, setuid_reader_build):
    """A user's setuid-root program at its prompt (like su asking for a password) runs with euid 0
    and /proc/PID owned by root, but it is not root's: root's menu does not offer it, with or
    without --all. Root's own program on another terminal is still listed."""
    program = attacker.home.parent / "setuid_reader"  # root's directory, which the user may read
    shutil.copy(setuid_reader_build, program)
    os.chown(program, 0, 0)
    program.chmod(0o4755)
    pid, master, _ = spawn_on_pty([str(program)], user_env(attacker), attacker)
    plain_pid, plain_master, _ = spawn_on_pty(["/bin/sleep", "300"], user_env(attacker), attacker)
    try:
        Terminal(master, "?").expect(f"ready uid={attacker.uid} euid=0")
        assert os.stat(f"/proc/{pid}").st_uid == 0  # what the picker used to go by
        roots = spawn.on_pty(ECHO)
        for extra in ((), ("--all",)):
            listed = picked(tmux, *extra)
            assert roots.pid in listed
            assert pid not in listed and plain_pid not in listed, extra
    finally:
        os.close(master)
        os.close(plain_master)
