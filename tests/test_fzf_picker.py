"""The fzf popup picker (`@reptyr-picker fzf|auto`) as a person meets it: a real `tmux attach` client on
a pty the test owns, its screen rendered by pyte, keys typed into it. The user is one of the test's
own (seat.py), so the popup lists exactly the processes the test started."""

from __future__ import annotations

import os
import shutil
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import ECHO, Client, wait_for
from ptrace.binding import func as pt
from seat import a_seat
from users import user_pids

from reptyr_tmux import proc
from reptyr_tmux.frontends.fzf_popup import GREY, PLAIN

PROMPT = "adopt> "
pytestmark = pytest.mark.skipif(shutil.which("fzf") is None, reason="fzf is not installed (apt-get "
                                "install fzf; bash setup.sh test does)")


@pytest.fixture
def seat(spawn, user_install):
    with a_seat(spawn, user_install) as s:
        yield s


def attach(seat, rows: int = 30) -> Client:
    client = Client(seat.server, rows=rows)
    seat.spawn.terminals.append(client.term)  # closed (the client killed) afterwards
    return client


def open_popup(client: Client) -> float:
    """prefix + A; seconds until fzf's prompt is drawn."""
    start = time.monotonic()
    client.type(b"\x02A")
    client.wait(PROMPT)
    return time.monotonic() - start


def picker_done(seat) -> None:
    """Wait until no `pick` of the user runs, nor an `adopt` it started (tmux forks a run-shell -b
    job before the picker's run-shell returns): whatever the key did has happened by then."""
    def ours(pid: int) -> bool:
        try:
            return bool({"pick", "adopt"} & set(proc.cmdline(pid)[4:5]))
        except OSError:
            return False
    wait_for(lambda: not [pid for pid in user_pids(seat.uid) if ours(pid)], what="the picker to finish")


def windows(seat) -> int:
    return len(seat.tmux("list-windows", "-t", "main").splitlines())


def test_fzf_popup_adopts_the_process_whose_name_is_typed(seat):
    seat.tmux("set-option", "-g", "@reptyr-picker", "fzf")
    bystander = seat.on_pty([*ECHO, "--name", "zebra"])
    chosen = seat.on_pty([*ECHO, "--name", "quokka"])
    ttys = {bystander.pid: bystander.stat().tty_dev, chosen.pid: chosen.stat().tty_dev}
    client = attach(seat)
    open_popup(client)
    screen = client.wait("moves     attach mode, into a new window")  # the preview of the row in front
    assert "zebra" in screen and "quokka" in screen and f"{chosen.pid}" in screen
    client.type(b"quokk")
    wait_for(lambda: "zebra" not in client.text(), what="the other row filtered out")
    client.type(b"\r")
    wait_for(lambda: chosen.stat().tty_dev != ttys[chosen.pid], what="the chosen process to move")
    assert windows(seat) == 2 and bystander.stat().tty_dev == ttys[bystander.pid]
    wait_for(lambda: f"adopted {chosen.pid}" in seat.messages(), what="the summary")
    assert seat.panes_in_mode() == []
    client.type(b"typed at once\r")  # the popup has gone: keys reach the program in its new window
    wait_for(lambda: "got: typed at once" in seat.tmux("capture-pane", "-p", "-t", "main:1"),
             what="the program's answer in its new pane")


def test_esc_closes_the_popup_and_adopts_nothing(seat):
    seat.tmux("set-option", "-g", "@reptyr-picker", "fzf")
    victim = seat.on_pty([*ECHO, "--name", "quokka"])
    tty = victim.stat().tty_dev
    client = attach(seat)
    open_popup(client)
    client.wait("quokka")
    client.type(b"\x1b")
    wait_for(lambda: PROMPT not in client.text(), what="the popup to close")
    picker_done(seat)
    assert (windows(seat), victim.stat().tty_dev) == (1, tty)
    assert "reptyr-tmux:" not in seat.messages() and seat.panes_in_mode() == []  # no summary, no error
    victim.term.write(b"still here\n")
    victim.term.expect("got: still here")


def test_refused_rows_are_shown_and_cannot_be_chosen(seat):
    seat.tmux("set-option", "-g", "@reptyr-picker", "fzf")
    traced = seat.on_pty([*ECHO, "--name", "quokka"])
    tty = traced.stat().tty_dev
    pt.ptrace(0x4206, traced.pid, 0, 0)  # PTRACE_SEIZE: a debugger holds it
    try:
        client = attach(seat)
        client.type(b"\x02A")
        client.wait("nothing here can be adopted (Esc closes)> ")
        client.wait(f"quokka — traced by {os.getpid()}")  # the whole reason
        client.type(b"\r")  # nothing to choose: Enter picks nothing
        time.sleep(0.3)
        client.type(b"quokka\r")  # typed for, it is still a header line, not a choice
        time.sleep(0.3)
        client.type(b"\x1b")  # (if Enter had closed the popup, this Esc does nothing)
        wait_for(lambda: "Esc closes" not in client.text(), what="the popup to close")
        picker_done(seat)
        assert windows(seat) == 1 and traced.stat().tty_dev == tty
        assert "traced by" not in seat.messages()  # no adoption was even tried (it would say why not)
    finally:
        pt.ptrace(0x4207, traced.pid)  # PTRACE_INTERRUPT, then detach
        os.waitpid(traced.pid, 0x40000000)
        pt.ptrace_detach(traced.pid)
    assert f"adopted {traced.pid}" not in seat.messages()


def test_crafted_names_show_inert_in_the_popup_and_its_preview(seat):
    """Formats, command substitution, fzf's own placeholders, a tab (fzf's field separator here, before
    the row's hidden index), escape sequences: shown as text, run by nobody, the index not forged."""
    seat.tmux("set-option", "-g", "@reptyr-picker", "fzf")
    marker = seat.home / "pwned"  # where `touch ~/pwned` would land, run by anyone as the user
    argv0 = "0\t;kill-server x#{pane_id} {1} '\" $(touch ~/pwned) `touch ~/pwned` #(touch ~/pwned)"
    decoy = seat.on_pty([*ECHO, "--name", "decoy"])
    victim = seat.on_pty(["bash", "-c", 'exec -a "$0" "$@"', argv0 + " \x1b]2;evil\x07 \x1b[2J", *ECHO])
    client = attach(seat)
    open_popup(client)
    client.wait("0?;kill-server x#{pane_id} {1} '\" $(touch")  # literally, the tab a '?'
    client.type(b"kill-server")
    wait_for(lambda: "decoy" not in client.text(), what="only the crafted row left")
    client.wait("`touch")  # its preview: the whole command line, as text
    client.wait("`touch ~/pwned` #(touch")
    client.wait("?]2;evil? ?[2J")  # the escape sequences defused, not obeyed
    handed_to_fzf_is_inert(seat)
    client.type(b"\r")
    wait_for(lambda: windows(seat) == 2, what="the crafted process adopted")
    assert proc_tty(victim.pid) != proc_tty(decoy.pid) and "decoy" not in seat.tmux("list-windows")
    time.sleep(0.3)
    assert not marker.exists() and seat.tmux("list-sessions")  # nothing ran; ';kill-server' neither


def handed_to_fzf_is_inert(seat) -> None:
    """What fzf reads while the popup is open: no control character but the field separator and our
    own grey, and every row's first field our index (fzf itself would also defuse much of it: this is
    about what we hand it)."""
    workdirs = [p for base in (Path("/tmp"), seat.home / ".cache" / "reptyr-tmux") if base.is_dir()
                for p in base.glob("reptyr-pick-*") if p.stat().st_uid == seat.uid]
    assert len(workdirs) == 1, workdirs
    rows = (workdirs[0] / "rows").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows] == [str(n) for n in range(len(rows))]
    for path in [workdirs[0] / "rows", *(workdirs[0] / "preview").iterdir()]:
        text = path.read_text().replace("\t", "").replace("\n", "").replace(GREY, "").replace(PLAIN, "")
        assert not [ch for ch in text if unicodedata.category(ch)[0] == "C"], (path, text)


def proc_tty(pid: int) -> int | None:
    return proc.read_stat(pid).tty_dev


def test_a_bad_picker_value_is_one_sentence_on_the_status_line(seat):
    seat.tmux("set-option", "-g", "@reptyr-picker", "fuzzy")
    victim = seat.on_pty(ECHO)
    tty = victim.stat().tty_dev
    client = attach(seat)
    client.type(b"\x02A")
    sentence = "@reptyr-picker is 'fuzzy'; use menu, fzf or auto"
    client.wait(sentence)
    assert "adopt which process?" not in client.text() and PROMPT not in client.text()
    assert f"reptyr-tmux: {sentence}" in seat.messages()
    assert (windows(seat), victim.stat().tty_dev, seat.panes_in_mode()) == (1, tty, [])


def test_auto_shows_the_menu_when_it_fits_and_the_popup_when_it_does_not(seat):
    """auto (the default): the popup only where the menu would be cut short (a 10-row client has room
    for 7 rows)."""
    for n in range(8):
        seat.on_pty([*ECHO, "--name", f"job{n}"])
    small = attach(seat, rows=10)
    small.type(b"\x02A")
    small.wait(PROMPT)
    small.wait(" 8/8 ")  # fzf's count: every one listed, none cut off
    small.type(b"\x1b")
    wait_for(lambda: PROMPT not in small.text(), what="the popup to close")
    small.close()
    large = attach(seat, rows=30)
    large.type(b"\x02A")
    large.wait("adopt which process?")  # the menu: everything fits
    assert PROMPT not in large.text()
    large.type(b"\x1b")


def test_fzf_asked_for_where_it_is_missing_is_one_sentence(seat, tmp_path):
    """Run-shell's PATH has tmux but no fzf: the key says so, and nothing else happens."""
    bare = seat.home / "bin"
    bare.mkdir()
    os.symlink(shutil.which("tmux"), bare / "tmux")
    seat.tmux("set-environment", "-g", "PATH", str(bare))
    seat.tmux("set-option", "-g", "@reptyr-picker", "fzf")
    victim = seat.on_pty(ECHO)
    client = attach(seat)
    client.type(b"\x02A")
    client.wait("@reptyr-picker is fzf, but fzf is not installed (apt-get install fzf)")
    assert "adopt which process?" not in client.text() and windows(seat) == 1
    assert victim.stat().tty_dev is not None and f"adopted {victim.pid}" not in seat.messages()
