"""`reptyr-tmux attach` as a user runs it: refusals, signals to us, the relay in a real terminal."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys

import pytest
from conftest import ECHO, Terminal, Tmux, wait_for
from ptrace.binding import func as pt
from test_faults import LEADER_STEPS, snapshot

from reptyr_tmux import proc
from reptyr_tmux.engine.survey import survey
from reptyr_tmux.errors import Refusal

CLI = [sys.executable, "-m", "reptyr_tmux"]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, **kwargs)


def assert_refused(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reptyr-tmux: "), result.stderr
    assert words in lines[0], lines[0]


@pytest.mark.parametrize(("pid", "words"), [
    ("abc", "is not a process id"),
    ("-5", "process ids are positive"),
    ("0", "process ids are positive"),
    ("99999999", "larger than any process id"),
    ("1", "process 1 is init"),
    ("2", "kernel thread"),
])
def test_bad_pids_are_refused(pid, words):
    assert_refused(run_cli("attach", pid), words)


def test_nonexistent_pid_is_refused():
    child = subprocess.Popen(["true"])
    child.wait()
    assert_refused(run_cli("attach", str(child.pid)), "no process")


def test_our_own_pid_and_our_parent_are_refused():
    result = subprocess.run(["sh", "-c", f"exec {' '.join(CLI)} attach $$"], capture_output=True, text=True)
    assert_refused(result, "this command itself")
    assert_refused(run_cli("attach", str(os.getpid())), "ran this command")


def test_zombie_is_refused():
    child = subprocess.Popen(["true"])
    wait_for(lambda: proc.read_stat(child.pid).state == "Z")
    try:
        assert_refused(run_cli("attach", str(child.pid)), "zombie")
    finally:
        child.wait()


def test_traced_process_is_refused(spawn):
    victim = spawn.on_pty(ECHO)
    before = snapshot(victim.pid)
    pt.ptrace(0x4206, victim.pid, 0, 0)  # PTRACE_SEIZE: we are its debugger now
    try:
        assert_refused(run_cli("attach", str(victim.pid)), "already being traced")
    finally:
        pt.ptrace(0x4207, victim.pid)  # PTRACE_INTERRUPT: a seized tracee must be stopped to detach
        os.waitpid(victim.pid, 0x40000000)
        pt.ptrace_detach(victim.pid)
    assert snapshot(victim.pid) == before


def test_process_without_terminal_is_refused_with_a_hint(spawn):
    victim = spawn.detached(ECHO)
    before = snapshot(victim.pid)
    assert_refused(run_cli("attach", str(victim.pid)), "use -s")
    assert snapshot(victim.pid) == before


def test_member_of_a_pipeline_is_refused_naming_the_others(spawn):
    job = spawn.in_shell(f"{' '.join(ECHO)} | cat")
    members = [s for s in proc.all_stats() if s.pgid == job.stat().pgid and s.pid != job.pid]
    assert members
    result = run_cli("attach", str(job.pid))
    assert_refused(result, "shares its process group with")
    assert all(str(m.pid) in result.stderr for m in members)


def test_another_users_process_is_refused(spawn):
    victim = spawn.on_pty(ECHO)
    child = os.fork()
    if child == 0:  # a real unprivileged process asks
        code = 3
        try:
            os.setegid(65534)
            os.seteuid(65534)
            survey(victim.pid)
        except Refusal as e:
            code = 0 if "belongs to user id 0" in str(e) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0


def test_steal_mode_needs_a_pseudo_terminal(spawn):
    victim = spawn.detached(ECHO)
    assert_refused(run_cli("attach", "-T", str(victim.pid)), "no pseudo-terminal")


def test_help_and_version():
    assert "attach" in run_cli("attach", "-h").stdout
    assert run_cli("attach", "-v").stdout.startswith("reptyr-tmux ")
    assert run_cli("-v").returncode == 0


@pytest.mark.parametrize("step", LEADER_STEPS)
@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_signal_to_us_while_attached_gives_the_target_back(spawn, step, signame):
    victim = spawn.on_pty(ECHO)
    before = snapshot(victim.pid)
    here, slave = spawn.new_terminal()  # attach relays to its stdin: it must be a terminal
    try:
        result = subprocess.run([*CLI, "attach", str(victim.pid)], capture_output=True, text=True, timeout=30,
                                stdin=slave, env=dict(os.environ, REPTYR_TMUX_FAULT=f"{step}:{signame}"))
    finally:
        os.close(slave)
    signum = signal.Signals[signame]
    assert result.returncode == 128 + signum, result.stderr
    assert "left as it was" in result.stderr
    assert snapshot(victim.pid) == before
    victim.term.write(b"old\n")
    victim.term.expect("got: old")


def cli_on_a_terminal(*args: str) -> tuple[int, Terminal]:
    """Run the CLI with a fresh pty as its terminal, as a user would in a new ssh window."""
    pid, master = pty.fork()
    if pid == 0:
        os.execvp(CLI[0], [*CLI, *args])
    return pid, Terminal(master, "?")


def test_attach_relays_both_ways_and_ends_with_the_target(spawn):
    victim = spawn.on_pty(ECHO)
    pid, here = cli_on_a_terminal("attach", str(victim.pid))
    spawn.terminals.append(here)
    here.expect("winch")  # the target's first words, through the relay
    here.write(b"through the relay\n")
    here.expect("got: through the relay")
    os.kill(victim.pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_the_relay_left_beside_a_session_leader_never_loads_ptrace(spawn):
    """python-ptrace (and ctypes under it) load in the engine's process, started first, in parallel with
    the command's own start: the relay that stays for the program's whole life never loads them."""
    victim = spawn.on_pty(ECHO)
    pid, here = cli_on_a_terminal("attach", str(victim.pid))
    spawn.terminals.append(here)
    here.expect("winch")
    here.write(b"moved\n")
    here.expect("got: moved")
    with open(f"/proc/{pid}/maps") as f:
        libraries = {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}
    assert not [name for name in libraries if name.startswith("_ctypes")], sorted(libraries)
    print(f"relay RSS: {proc.resident_kb(pid)} kB")


def test_sigint_to_a_relay_ends_it_with_a_line_not_a_traceback():
    pid, here = cli_on_a_terminal("attach", "-l")
    here.expect("Opened a new pty: /dev/pts/")
    os.kill(pid, signal.SIGINT)
    _, status = os.waitpid(pid, 0)
    said = here.quiet_for(0.2).decode(errors="replace")
    here.close()
    assert "reptyr-tmux: interrupted" in said and "Traceback" not in said, said
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130


def test_new_pty_mode_prints_its_name_and_runs_the_command(tmp_path):
    out = tmp_path / "pty-name"
    pid, here = cli_on_a_terminal("attach", "-L", "sh", "-c", f'echo "$REPTYR_PTY" > {out}; echo hi-from-L')
    here.expect("Opened a new pty: /dev/pts/")
    here.expect("hi-from-L")
    _, status = os.waitpid(pid, 0)
    here.close()
    assert out.read_text().startswith("/dev/pts/")
    assert os.WEXITSTATUS(status) == 0


# -- the command line as a newcomer meets it ---------------------------------------------------------

COMMANDS = ("adopt", "pick", "attach", "screen-pick", "plugin-init", "demo")


def test_every_command_prints_its_help_and_the_top_help_lists_them_all():
    outside = {k: v for k, v in os.environ.items() if k not in ("STY", "TMUX")}
    top = run_cli("--help", env=outside)
    assert top.returncode == 0 and top.stdout.startswith("usage: reptyr-tmux COMMAND")
    for command in COMMANDS:
        assert f"\n  {command} " in top.stdout, command
        result = run_cli(command, "--help", env=outside)
        assert (result.returncode, result.stderr) == (0, ""), (command, result.stderr)
        assert result.stdout.startswith(f"usage: reptyr-tmux {command}"), (command, result.stdout)


def test_attach_usage_line_names_the_command():
    result = run_cli("attach", "-x", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: reptyr-tmux attach [-s] [-T] [-V] PID\n")


def test_an_unknown_command_is_named():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert result.stderr.startswith("reptyr-tmux: unknown command 'frobnicate'\nusage: reptyr-tmux COMMAND")


@pytest.mark.parametrize("flags", [[], ["-T"]])
def test_attach_without_a_terminal_refuses_before_touching_the_target(spawn, flags):
    victim = spawn.on_pty(ECHO)
    before = snapshot(victim.pid)
    result = run_cli("attach", *flags, str(victim.pid))  # stdin is /dev/null, as from a script
    assert_refused(result, "stdin is not a terminal: run attach from the terminal you want the process on")
    assert snapshot(victim.pid) == before
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")


def test_demo_without_tmux_says_how_to_get_it(tmp_path):
    result = run_cli("demo", "-L", f"never-{os.getpid()}", env=dict(os.environ, PATH=str(tmp_path)))
    assert result.returncode == 1
    assert result.stderr == "reptyr-tmux: tmux is not installed (apt-get install tmux)\n"


def test_demo_says_how_to_stop_it_and_its_session_ends_with_no_window_left(spawn):
    socket = f"reptyr-demo-test-{os.getpid()}"
    tmux = ["tmux", "-L", socket]
    try:
        result = run_cli("demo", "-L", socket)
        assert result.returncode == 0, result.stderr
        assert f"tmux -L {socket} kill-server" in result.stdout
        windows = subprocess.run([*tmux, "list-windows", "-a"], capture_output=True, text=True).stdout
        assert len(windows.splitlines()) == 1, windows  # the job's own window, nothing to land in
        pid, master = pty.fork()
        if pid == 0:
            os.environ["TERM"] = "xterm"
            os.execvp("tmux", [*tmux, "attach", "-t", "reptyr-demo"])
        client = Terminal(master, "?")
        spawn.terminals.append(client)
        client.expect("you said: hello from tmux")
        client.write(b"\x03")  # C-c: the job ends; its shell came along and is at its prompt
        client.expect("$ ")
        client.write(b"exit\r")  # the session ends: its window closes, and so do the session and server
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status)
        wait_for(lambda: subprocess.run([*tmux, "has-session"], capture_output=True).returncode != 0,
                 what="the demo's server to end")
    finally:
        Tmux(socket).kill()
