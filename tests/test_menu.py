"""The key binding and the menu as a person meets them: a real `tmux attach` client on a pty the test
owns, keys typed into that pty. The user is one of the test's own (seat.py), so the menu lists exactly
the processes the test started."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import time
from pathlib import Path

import pytest
from conftest import ECHO, wait_for
from ptrace.binding import func as pt
from realssh import SYSTEM_PYTHON
from seat import a_seat

from reptyr_tmux import proc
from reptyr_tmux.engine.survey import survey
from reptyr_tmux.mux.tmux import MENUS_FROM, TIMED_MESSAGES_FROM

pytestmark = pytest.mark.tmux  # run again with each other tmux release in CI (.ci/tmux-versions.sh)


@pytest.fixture
def seat(spawn, user_install):
    with a_seat(spawn, user_install) as s:
        yield s


def owner_of(pid: int) -> int | None:
    """/proc/PID's owner, or None once it is gone (any process may end between the list and the look)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except FileNotFoundError:
        return None


def row_of(lines: list[str], pid: int) -> str:
    return next(line for line in lines if line.split()[0] == str(pid))


def listed_with(seat, *pids: int) -> list[str]:
    """--list once it shows all of pids: a shell's child is left out for its first second."""
    return wait_for(lambda: (lines := seat.listed()) and all(any(line.split()[0] == str(p) for line in lines)
                                                             for p in pids) and lines, what=f"{pids} listed")


def test_menu_adoption_says_its_summary_on_the_status_line_only(seat):
    name = "v%H#{pane_id}"  # strftime and format syntax: both must show as they are
    victim = seat.on_pty([*ECHO, "--name", name])
    client = seat.attach()
    seat.open_menu()
    key = seat.menu_key(victim.pid)  # as drawn: a process elsewhere ending cannot shift it
    client.write(key.encode())
    summary = f"adopted {victim.pid} ({name}) from"
    client.expect(summary)  # drawn on the client's status line
    shown_at = time.monotonic()
    client.expect("[main]")  # the status line back: the message has gone
    shown_for = time.monotonic() - shown_at
    if seat.server.version() >= TIMED_MESSAGES_FROM:
        assert 3.0 < shown_for < 8.0, f"the summary was shown for {shown_for:.1f} s"
    else:  # no display-message -d: tmux's display-time (0.75 s), which is the user's to set
        assert shown_for < 3.0, f"the summary was shown for {shown_for:.1f} s"
    assert summary in seat.messages()
    assert seat.panes_in_mode() == []  # no view-mode over the new pane
    assert len(seat.tmux("list-windows", "-t", "main").splitlines()) == 2
    client.write(b"typed at once\r")  # the first keys reach the program, none swallowed
    wait_for(lambda: "got: typed at once" in seat.tmux("capture-pane", "-p", "-t", "main:1"),
             what="the program's answer in its new pane")


def test_failed_menu_adoption_says_why_on_the_status_line_not_in_view_mode(seat):
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    seat.open_menu()
    key = seat.menu_key(victim.pid)  # as drawn: a process elsewhere ending cannot shift it
    os.kill(victim.pid, signal.SIGKILL)  # gone between the menu and the key
    os.waitpid(victim.pid, 0)
    client.write(key.encode())
    seen = client.expect(f"no process {victim.pid} exists")
    assert "returned" not in seen
    assert f"reptyr-tmux: no process {victim.pid} exists" in seat.messages()
    time.sleep(0.5)  # a view-mode would be drawn by now
    assert "returned" not in client.quiet_for(0.2).decode(errors="replace")
    assert seat.panes_in_mode() == []
    assert len(seat.tmux("list-windows", "-t", "main").splitlines()) == 1


def test_adopt_status_line_prints_nothing_and_by_hand_prints_the_summary(seat):
    seat.attach()
    first, second = seat.on_pty(ECHO), seat.on_pty(ECHO)
    quiet = seat.cli("adopt", "--status-line", "-L", seat.socket, "-t", "main", str(first.pid))
    assert (quiet.returncode, quiet.stdout) == (0, "")
    assert f"adopted {first.pid}" in seat.messages()
    failed = seat.cli("adopt", "--status-line", "-L", seat.socket, "-t", "main", "99999999")
    assert (failed.returncode, failed.stdout) == (0, "")
    assert "99999999 is larger than any process id" in seat.messages()
    by_hand = seat.cli("adopt", "-L", seat.socket, "-t", "main", str(second.pid))
    assert by_hand.returncode == 0 and by_hand.stdout.startswith(f"adopted {second.pid} ")
    refused = seat.cli("adopt", "-L", seat.socket, "-t", "main", "99999999")
    assert refused.returncode == 2 and "larger than any process id" in refused.stderr


# -- the choice goes back to the picker that drew the menu -------------------------------------------

def waiting_picker(seat) -> int:
    """The pid of the picker waiting for this menu's choice, from the option it set before drawing."""
    options = seat.tmux("show-options", "-g")
    found = re.findall(r"^@reptyr-waiting-(\d+) ", options, re.MULTILINE)
    assert len(found) == 1, options
    return int(found[0])


def adopt_commands(uid: int) -> set[int]:
    """The user's processes running `reptyr-tmux adopt` (a Python started for one adoption); other
    tests on this machine run theirs."""
    found = set()
    for pid in proc.all_pids():
        if owner_of(pid) != uid:
            continue
        argv = proc.cmdline(pid)
        if "adopt" in argv and any("reptyr_tmux" in arg for arg in argv):
            found.add(pid)
    return found


def choose_and_watch(seat, client, victim, picker: int) -> tuple[set[int], bool]:
    """Type the victim's key; until it has moved, watch closely (a Python started for one adoption
    lives ~100 ms). Which such Pythons ran, and whether the picker was still alive at the move."""
    old_tty = proc.read_stat(victim.pid).tty_nr
    client.write(seat.menu_key(victim.pid).encode())
    started_anew = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        started_anew |= adopt_commands(seat.uid)
        if proc.read_stat(victim.pid).tty_nr != old_tty:
            return started_anew, os.path.exists(f"/proc/{picker}")
        time.sleep(0.001)
    raise AssertionError("the chosen process was never moved")


def test_the_menu_choice_is_adopted_by_the_picker_itself_no_python_starts_after_it(seat):
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    seat.open_menu()
    picker = waiting_picker(seat)
    assert "pick" in proc.cmdline(picker)
    started_anew, picker_alive_at_move = choose_and_watch(seat, client, victim, picker)
    assert started_anew == set()
    assert picker_alive_at_move  # the move was made by the engine the picker had started
    client.expect(f"adopted {victim.pid} (")
    wait_for(lambda: not os.path.exists(f"/proc/{picker}"), what="the picker's end")
    assert "@reptyr-" not in seat.tmux("show-options", "-g")  # its two options gone with it


def test_an_item_chosen_once_the_picker_stopped_waiting_adopts_on_its_own(seat):
    """tmux orders nothing between the item's command and the picker's end of waiting: where the
    picker has stopped first, the item runs the adoption itself."""
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    seat.open_menu()
    picker = waiting_picker(seat)
    seat.tmux("set-option", "-gu", f"@reptyr-waiting-{picker}")  # as if the picker had stopped waiting
    started_anew, _ = choose_and_watch(seat, client, victim, picker)
    assert started_anew  # the item's own adoption
    client.expect(f"adopted {victim.pid} (")
    wait_for(lambda: victim.pid in pane_pids_of_adopted(seat), what="the victim in a pane of its own")
    assert "@reptyr-" not in seat.tmux("show-options", "-g")


def pane_pids_of_adopted(seat) -> set[int]:
    """Pids whose stdin is one of the server's pane terminals."""
    ttys = set(seat.tmux("list-panes", "-a", "-F", "#{pane_tty}").split())
    return {s.pid for s in proc.all_stats() if s.tty_dev and proc.pts_path(s.tty_dev) in ttys}


def test_a_menu_closed_without_a_choice_leaves_nothing_behind(seat):
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    seat.open_menu()
    picker = waiting_picker(seat)
    engine = wait_for(lambda: [s.pid for s in proc.all_stats() if s.ppid == picker] or None,
                      what="the engine's process the picker started early")
    client.write(b"q")  # closes tmux's menu
    wait_for(lambda: not os.path.exists(f"/proc/{picker}"), what="the picker's end")
    assert all(not os.path.exists(f"/proc/{pid}") for pid in engine)
    assert "@reptyr-" not in seat.tmux("show-options", "-g")
    assert len(seat.tmux("list-windows", "-t", "main").splitlines()) == 1
    assert proc.read_stat(victim.pid).tty_nr == os.stat(victim.term.slave_path).st_rdev


# -- what the menu lists, and how ------------------------------------------------------------------

DEAD_FOREGROUND = r"""
import os, time
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.setpgid(0, 0)
    os.read(r, 1)
    os._exit(0)
os.setpgid(child, child)
os.tcsetpgrp(0, child)  # the child's group in front, as a shell puts its job
os.write(w, b"x")
os.waitpid(child, 0)  # reaped, and the terminal not taken back: the moment a shell is in after a job
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def test_a_shell_between_jobs_is_not_greyed(seat):
    """Its terminal's foreground group has no one left in it: that is the shell's own moment (a loop
    between two commands), not a job that moving the shell would hang up."""
    victim = seat.on_pty([SYSTEM_PYTHON, "-c", DEAD_FOREGROUND])
    stat = proc.read_stat(victim.pid)
    assert stat.tpgid not in (stat.pgid, -1) and not any(s.pgid == stat.tpgid for s in proc.all_stats())
    row = row_of(seat.listed(), victim.pid)
    assert "[" not in row and row.split()[3] == "attach", row
    survey(victim.pid)  # the move itself agrees: no refusal
    seat.attach()
    menu = seat.open_menu()
    assert re.search(rf"{victim.pid} .*attach .*\(1\)", menu), menu


def test_menu_rows_say_the_mode_show_the_script_and_whole_reasons(seat, spawn):
    alone = seat.on_pty(ECHO)
    shell = seat.on_pty(["bash", "--norc", "--noprofile", "-i"], ready="$ ")
    shell.term.write(f"{' '.join(seat.echo)}\n".encode())
    shell.term.expect("ready")
    job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell.pid), None), what="job")
    traced = seat.on_pty(ECHO)
    pt.ptrace(0x4206, traced.pid, 0, 0)  # PTRACE_SEIZE: a debugger holds it
    try:
        lines = listed_with(seat, alone.pid, shell.pid, job, traced.pid)
        assert row_of(lines, alone.pid).split()[3:] == ["attach", "echo.py"]  # not the python path
        assert row_of(lines, shell.pid).split()[3] == "session"
        assert row_of(lines, job).split()[3:5] == ["session", "echo.py"]
        assert row_of(lines, traced.pid).endswith(f"[traced by {os.getpid()}]")
        seat.attach()
        menu = seat.open_menu()
        assert re.search(rf"{alone.pid} .*attach  echo\.py ", menu)
        assert f"— traced by {os.getpid()}" in menu  # whole, not cut mid-word
    finally:
        pt.ptrace(0x4207, traced.pid)  # PTRACE_INTERRUPT, then detach
        os.waitpid(traced.pid, 0x40000000)
        pt.ptrace_detach(traced.pid)


def test_menu_leaves_out_a_loops_short_children_and_the_shell_of_a_tmux_client(seat):
    loop = seat.on_pty(["bash", "--norc", "--noprofile", "-c", "echo ready; while :; do sleep 0.2; done"])
    seated = seat.on_pty(["bash", "--norc", "--noprofile", "-i"], ready="$ ")
    seated.term.write(f"tmux -L {seat.socket} attach -t main\n".encode())
    wait_for(lambda: len(seat.tmux("list-clients").splitlines()) == 1, what="the second client")
    for _ in range(10):
        lines = seat.listed()
        pids = [int(line.split()[0]) for line in lines]
        assert loop.pid in pids and seated.pid not in pids, lines
        assert not [line for line in lines if line.split()[4] == "sleep"], lines
        assert "[" not in row_of(lines, loop.pid), lines  # never greyed between two of its sleeps
        time.sleep(0.1)


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client installed (apt-get install "
                    "openssh-client)")
def test_menu_leaves_out_the_users_ssh_client(seat):
    # A real ssh client, waiting for a server that never answers (its "connection" is a sleep).
    client = seat.on_pty(["ssh", "-F", "/dev/null", "-o", "ProxyCommand=sleep 60", "-o", "BatchMode=yes",
                          "nowhere"], ready="")
    wait_for(lambda: proc.read_stat(client.pid).comm == "ssh", what="ssh to run")
    time.sleep(0.2)
    assert str(client.pid) not in [line.split()[0] for line in seat.listed()]


def test_only_jobs_left_behind_count_as_nohup_jobs(seat, tmp_path):
    shell = seat.on_pty(["bash", "--norc", "--noprofile", "-i"], ready="$ ")
    out = seat.home
    echo = " ".join(seat.echo)
    shell.term.write(f"nohup {echo} --sleep >{out}/nohup.log 2>&1 & echo job=$!\n"
                     f"setsid {echo} --sleep >{out}/daemon.log 2>&1 & echo ok\n".encode())
    job = int(re.search(r"job=(\d+)", shell.term.expect("ok\r\n")).group(1))
    daemon = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.sid == s.pid and s.pid != job
                                    and owner_of(s.pid) == seat.uid
                                    and s.comm.startswith("python")), None), what="the daemon")
    assert row_of(listed_with(seat, job), job).split()[1] != "?"  # while its shell lives it has a terminal
    os.kill(shell.pid, signal.SIGKILL)  # the ssh session ends; nohup's job stays, without a terminal
    wait_for(lambda: proc.read_stat(job).tty_nr == 0, what="the job to lose its terminal")
    pids = [int(line.split()[0]) for line in seat.listed()]
    assert job in pids and daemon not in pids  # a daemon leads its own session and logs to a file too


# -- the key binding's options and crafted names, through the menu ------------------------------------

def test_key_binding_menu_adopts_the_chosen_process(seat):
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    seat.open_menu()
    key = seat.menu_key(victim.pid)  # as drawn: a process elsewhere ending cannot shift it
    client.write(key.encode())
    wait_for(lambda: len(seat.tmux("list-windows", "-t", "main").splitlines()) == 2, what="the window")
    client.write(b"picked\r")
    wait_for(lambda: "got: picked" in seat.tmux("capture-pane", "-p", "-t", "main:1"), what="the answer")


def test_crafted_names_show_up_safely_and_run_nothing(seat, tmp_path):
    marker = seat.home / "pwned"
    argv0 = f"x#{{pane_id}};kill-server #(touch {marker}) \x1b]0;evil\x07 \xff"
    touched = Path("/tmp/x")  # the name has room for 15 characters only: watch that path's state
    before = touched.stat().st_mtime_ns if touched.exists() else None
    victim = seat.on_pty(["bash", "-c", 'exec -a "$0" "$@"', argv0, *ECHO, "--name", "#(touch /tmp/x)"])
    mine = row_of(seat.listed(), victim.pid)
    assert "\x1b" not in mine and "\x07" not in mine
    client = seat.attach()
    menu = seat.open_menu()
    assert "x#{pane_id};kill-server #(touch" in menu  # shown literally, not expanded
    client.write(b"\x1b")  # close the menu
    adopted = seat.cli("adopt", "-L", seat.socket, "-t", "main", str(victim.pid))
    assert adopted.returncode == 0, adopted.stderr
    assert seat.tmux("display-message", "-p", "-t", "main:1", "#{window_name}").strip() == "#(touch /tmp/x)"
    time.sleep(0.3)
    assert not marker.exists()
    assert (touched.stat().st_mtime_ns if touched.exists() else None) == before  # not created, not touched
    assert seat.tmux("list-sessions")  # the server is alive: ';kill-server' ran nothing


def test_plugin_options_reach_the_adoption(seat):
    victim = seat.on_pty(ECHO)
    old_tty = victim.stat().tty_dev
    for option, value in (("@reptyr-placement", "split-h"), ("@reptyr-remain-on-exit", "on"),
                          ("@reptyr-redraw", "off"), ("@reptyr-modes", "none")):
        seat.tmux("set-option", "-g", option, value)
    client = seat.attach()
    seat.open_menu()
    key = seat.menu_key(victim.pid)  # as drawn: a process elsewhere ending cannot shift it
    client.write(key.encode())
    panes = lambda: seat.tmux("list-panes", "-t", "main:0", "-F", "#{pane_id} #{pane_tty}").splitlines()  # noqa: E731
    wait_for(lambda: len(panes()) == 2 and victim.stat().tty_dev != old_tty, what="a split, not a window")
    new = next(p.split()[0] for p in panes() if os.stat(p.split()[1]).st_rdev == victim.stat().tty_dev)
    assert len(seat.tmux("list-windows", "-t", "main").splitlines()) == 1
    wait_for(lambda: seat.tmux("show-options", "-p", "-t", new, "-v", "remain-on-exit").strip() == "on",
             what="remain-on-exit on the new pane (set right after the move)")
    os.kill(victim.pid, signal.SIGTERM)
    wait_for(lambda: seat.tmux("display-message", "-p", "-t", new, "#{pane_dead}").strip() == "1",
             what="the pane to stay, dead")


def test_reptyr_mode_attach_moves_a_shells_job_alone_and_a_bad_mode_is_one_sentence(seat):
    shell = seat.on_pty(["bash", "--norc", "--noprofile", "-i"], ready="$ ")
    shell.term.write(f"{' '.join(seat.echo)}\n".encode())
    shell.term.expect("ready")
    job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell.pid), None), what="job")
    seat.tmux("set-option", "-g", "@reptyr-mode", "attach")
    assert row_of(listed_with(seat, job), job).split()[3] == "attach"  # the menu says what will happen
    client = seat.attach()
    seat.open_menu()
    client.write(seat.menu_key(job).encode())
    client.expect(f"adopted {job} (")
    assert "attach mode: asked for" in seat.messages()
    assert proc.read_stat(shell.pid).tty_dev == os.stat(shell.term.slave_path).st_rdev  # the shell stayed
    assert proc.read_stat(job).tty_dev != proc.read_stat(shell.pid).tty_dev
    seat.tmux("set-option", "-g", "@reptyr-mode", "relay")
    client.write(b"\x02A")
    client.expect("@reptyr-mode is 'relay'; use auto, attach, session or steal")


def test_numbered_window_adopts_the_number_typed(seat):
    """tmux before 3.0 has no display-menu: prefix + A opens a window listing the candidates by number
    (on a newer tmux the same list is `pick --numbered`, opened here by hand)."""
    victim = seat.on_pty(ECHO)
    client = seat.attach()
    if seat.server.version() < MENUS_FROM:
        client.write(b"\x02A")
    else:
        numbered = [*seat.product, "pick", "--numbered", "-L", seat.socket]
        seat.tmux("new-window", "-n", "adopt", shlex.join(numbered))
    client.expect("number (Enter to cancel)")
    row = next(line for line in seat.screen().splitlines() if f" {victim.pid} " in line)
    client.write(row.split()[0].encode() + b"\r")
    windows = lambda: seat.tmux("list-windows", "-t", "main", "-F", "#{window_name}").split()  # noqa: E731
    # The choice starts a Python of its own (the adopt command), seconds under emulation (arm64 CI).
    wait_for(lambda: len(windows()) == 2 and "adopt" not in windows(), 30, "the list closed, the new window")
    client.write(b"picked\r")
    wait_for(lambda: "got: picked" in seat.tmux("capture-pane", "-p", "-t", "main"), what="the answer")
