"""The main scenario, for real: jobs of a real OpenSSH session's shell, adopted by an ordinary user (and by
root) into their own tmux, then the ssh connection dropped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

import pytest
from conftest import Client, Tmux, blocked_reading_fd, wait_for
from realssh import ChildTerminal, as_user, spawn_on_pty, user_tmux
from test_faults import snapshot
from users import user_env

from reptyr_tmux import proc

LINE_PROGRAM = "sh -c 'while read -r line; do echo \"got: $line\"; done'"
WITH_CHILDREN = "sh -c 'while :; do echo tick; sleep 0.3; done'"


def job_of(login, argv0: str) -> int:
    """The shell's foreground job (a direct child of the remote shell)."""
    return wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == login.shell_pid
                                  and s.comm == argv0 and s.state != "Z"), None), what=argv0)


def adopt_as(user, user_install, tmux, pid: int, *extra: str):
    result = as_user(user, [*user_install, "adopt", "-L", tmux.socket, "-t", "main", *extra, str(pid)])
    assert result.returncode == 0, result.stderr
    assert "session mode" in result.stdout + result.stderr  # auto: a shell's job moves with its session
    return result


@pytest.mark.parametrize("who", ["ordinary", "root"])
def test_a_job_of_an_ssh_shell_moves_and_outlives_the_connection(sshd, ordinary_user, user_install, who):
    user = ordinary_user if who == "ordinary" else None
    login = sshd.login(ordinary_user if user else "root")
    login.run(LINE_PROGRAM)
    job = job_of(login, "sh")
    with user_tmux(user) if user else _root_tmux() as tmux:
        result = adopt_as(user, user_install, tmux, job) if user else _adopt_root(user_install, tmux, job)
        assert "session mode" in result.stderr + result.stdout
        assert not _gone(login.shell_pid)
        login.expect("this terminal's session moved to tmux session 'main', window 1")
        assert tmux.pane("main:1", "#{pane_current_command}") == "sh"  # tmux names the program
        login.drop()  # the connection drops, as a laptop closed
        wait_for(lambda: all(_gone(pid) for pid in login.sshd_pids), what="sshd to end the connection")
        tmux("send-keys", "-t", "main:1", "after the drop", "Enter")
        tmux.wait_screen("main:1", "got: after the drop")
        assert not _gone(job) and not _gone(login.shell_pid)
        tmux("send-keys", "-t", "main:1", "C-c")  # the job ends: its shell is there, at its prompt
        wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="the shell")


def test_a_job_with_children_moves_whole(sshd, ordinary_user, user_install):
    login = sshd.login(ordinary_user)
    login.run(WITH_CHILDREN)
    job = job_of(login, "sh")
    with user_tmux(ordinary_user) as tmux:
        adopt_as(ordinary_user, user_install, tmux, job)
        tmux.wait_screen("main:1", "tick")
        login.drop()
        wait_for(lambda: all(_gone(pid) for pid in login.sshd_pids), what="sshd to end the connection")
        before = tmux.screen("main:1").count("tick")
        wait_for(lambda: tmux.screen("main:1").count("tick") > before, what="more ticks after the drop")


def test_vim_of_an_ssh_shell_is_painted_in_the_pane(sshd, ordinary_user, user_install):
    login = sshd.login(ordinary_user, env={"TERM": "xterm-256color"})
    login.run(f"vim -u NONE -N {text_file(ordinary_user)}")
    vim = job_of(login, "vim")
    login.expect("Network services")
    with user_tmux(ordinary_user) as tmux:
        adopt_as(ordinary_user, user_install, tmux, vim)
        tmux.wait_screen("main:1", "Network services")  # no key pressed
        assert tmux.pane("main:1", "#{alternate_on} #{pane_current_command}") == "1 vim"
        login.drop()
        tmux("send-keys", "-t", "main:1", ":q", "Enter")
        wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="vim to quit")
        assert tmux.pane("main:1", "#{alternate_on}") == "0"


def test_a_session_with_a_setuid_member_is_refused_untouched(sshd, ordinary_user, user_install):
    """passwd (setuid root) waiting at its prompt cannot be traced by its user: nothing is touched and
    one sentence says what to do."""
    login = sshd.login(ordinary_user)
    login.run("sleep 1000 &")
    login.expect_prompt()
    login.run("passwd")
    login.expect("assword")
    sleeper = next(s.pid for s in proc.all_stats() if s.sid == login.shell_pid and s.comm == "sleep")
    before = {pid: snapshot(pid) for pid in login.session() if proc.read_stat(pid).comm != "passwd"}
    with user_tmux(ordinary_user) as tmux:
        result = as_user(ordinary_user, [*user_install, "adopt", "-L", tmux.socket, "-t", "main",
                                         str(sleeper)])
        assert result.returncode == 2
        assert "not entirely yours" in result.stderr and "--mode attach" in result.stderr
        assert tmux.windows() == ["0"]  # no pane was left behind
    assert {pid: snapshot(pid) for pid in before} == before


def test_a_setuid_program_picked_itself_is_refused_untouched(sshd, ordinary_user, user_install):
    """passwd at its prompt, picked itself by its user (moved alone or with its session): ptrace would
    be denied, so it is refused before anything is tried, in one sentence, and it keeps its prompt on
    the old terminal: the password typed there still reaches it."""
    login = sshd.login(ordinary_user)
    login.run("passwd")
    login.expect("assword")
    target = next(pid for pid in login.session() if proc.read_stat(pid).comm == "passwd")
    # (its prompt is out before it blocks ^Z and reads: the state to keep is the one it waits in)
    wait_for(lambda: blocked_reading_fd(target, 0), what="passwd to read the password")
    before = snapshot(target)
    with user_tmux(ordinary_user) as tmux:
        for mode in ("attach", "session", "auto"):
            result = as_user(ordinary_user, [*user_install, "adopt", "-L", tmux.socket, "-t", "main",
                                             "--mode", mode, str(target)])
            assert result.returncode == 2, (mode, result.stderr)
            assert "setuid" in result.stderr and "as root" in result.stderr, (mode, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1, (mode, result.stderr)
        assert tmux.windows() == ["0"]  # no pane was left behind
    assert snapshot(target) == before and proc.read_status(target)["TracerPid"] == "0"
    login.run("not-the-password")
    login.expect("passwd:", timeout=15)  # passwd read it (and refused it) on its own terminal


def text_file(user) -> str:
    """A file of the user's for vim to show (a minimal system may lack /etc/services and the like)."""
    path = user.home / "services.txt"
    path.write_text("# Network services, Internet style\n" + "".join(f"line {n}\n" for n in range(100)))
    os.chown(path, user.uid, user.gid)
    return str(path)


def _gone(pid: int) -> bool:
    try:
        return proc.read_stat(pid).state in ("Z", "X")
    except OSError:
        return True


@contextlib.contextmanager
def _root_tmux():
    tmux = Tmux(f"rtu-root-{os.getpid()}-{time.monotonic_ns()}")
    tmux("-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "100", "-y", "30")
    try:
        yield tmux
    finally:
        tmux.kill()


def _adopt_root(user_install, tmux, pid: int):
    result = subprocess.run([*user_install, "adopt", "-L", tmux.socket, "-t", "main", str(pid)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_a_setuid_program_of_ones_own_is_refused_in_a_sentence(sshd, ordinary_user, user_install):
    """passwd run by the user is theirs by real uid but not traceable by them: a sentence, exit 2."""
    login = sshd.login(ordinary_user)
    login.run("passwd")
    login.expect("assword")
    passwd = job_of(login, "passwd")
    with user_tmux(ordinary_user) as tmux:
        result = as_user(ordinary_user, [*user_install, "adopt", "-L", tmux.socket, "-t", "main",
                                         "--mode", "attach", str(passwd)])
    assert result.returncode == 2 and "not allowed to trace" in result.stderr, result.stderr
    assert "internal error" not in result.stderr


def test_prefix_a_moves_vim_of_an_ssh_shell_painted_and_job_control_works(sshd, ordinary_user, user_install):
    """As a person does it: the user's own tmux, prefix + A typed into a real attached client, vim
    picked from the menu; it is painted at once, and the shell's job control works in the pane."""
    login = sshd.login(ordinary_user, env={"TERM": "xterm-256color"})
    login.run(f"vim -u NONE -N {text_file(ordinary_user)}")
    vim = job_of(login, "vim")
    login.expect("Network services")
    with user_tmux(ordinary_user) as tmux:
        assert as_user(ordinary_user, [*user_install, "plugin-init", "-L", tmux.socket]).returncode == 0
        listed = [*user_install, "pick", "-L", tmux.socket, "--list"]  # (a job under 1 s old is not listed)
        wait_for(lambda: f" {vim} " in as_user(ordinary_user, listed).stdout, what="vim in the menu")
        client = Client(tmux)
        try:
            client.type(b"\x02A")
            client.wait("adopt which process?")
            client.type(client.menu_key(vim).encode())
            wait_for(lambda: len(tmux.windows()) == 2, what="the adoption window")
            tmux.wait_screen("main:1", "Network services")  # painted without a key
            wait_for(lambda: tmux.pane("main:1", "#{alternate_on} #{pane_in_mode} #{pane_current_command}")
                     == "1 0 vim", what="vim in front, on the alternate screen, no view-mode")
            login.expect("this terminal's session moved to tmux session 'main', window 1")
            login.drop()
            client.type(b":q\r")
            wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="vim to quit")
            assert "Network services" not in tmux.wait_screen("main:1", "rtu$")  # a clean normal screen
            client.type(b"cat\r")
            wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "cat", what="cat to start")
            client.type(b"\x1a")
            tmux.wait_screen("main:1", "Stopped")
            client.type(b"fg\r")
            wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "cat", what="fg")
            client.type(b"meow\r")
            tmux.wait_screen("main:1", "meow\nmeow")
            client.type(b"\x03")
            wait_for(lambda: tmux.pane("main:1", "#{pane_current_command}") == "bash", what="^C")
            client.type(b"exit\r")  # the session ends: its pane closes, as a terminal window would
            wait_for(lambda: tmux.windows() == ["0"], what="the pane to close")
        finally:
            client.close()


def _let_go(pid: int) -> bool:
    return proc.read_status(pid)["TracerPid"] == "0" and proc.read_stat(pid).state not in "tT"


def _says_running(login) -> bool:
    login.run("jobs")
    return "running" in login.expect_prompt().lower()


# Stays when its terminal ends (read fails: it naps and tries again), so only a SIGHUP ends it: closing
# the new terminal can then be seen to hang it up, not merely to end its input.
OUTLIVES_ITS_TERMINAL = ("sh -c 'while :; do if read -r line; then echo \"got: $line\"; else sleep 0.2; fi; "
                         "done'")


@pytest.mark.parametrize(("who", "shell"), [("ordinary", "bash"), ("ordinary", "zsh"), ("ordinary", "fish"),
                                            ("ordinary", "dash"), ("root", "bash")])
def test_attach_keeps_a_job_of_an_ssh_shell_alive_when_the_connection_drops(sshd, ordinary_user,
                                                                             user_install, who, shell):
    """The reptyr drop-in, as its users use it: `reptyr-tmux attach PID` in another terminal, then the
    ssh connection drops; the old shell hangs its jobs up (bash, fish), the moved one lives, answers,
    and gets its own SIGHUP action back once that shell is gone; closing the new terminal then hangs it
    up as usual."""
    user = ordinary_user if who == "ordinary" else None
    login = sshd.login(user or "root", shell)
    login.run(OUTLIVES_ITS_TERMINAL)
    job = job_of(login, "sh")
    own = proc.read_status(job)["SigIgn"]
    relay = ChildTerminal(*spawn_on_pty([*user_install, "attach", str(job)], user_env(user) if user else
                                        dict(os.environ), user))
    try:
        # fd 0 moves half-way through; the move is over once the job runs again, untraced
        wait_for(lambda: proc.fd_target(job, 0) != login.pts and _let_go(job), what="the move")
        login.expect_prompt()  # the old shell has its prompt back
        if shell != "dash":  # (dash keeps a job it saw stop for stopped; it hangs nothing up)
            # and knows its job runs again (bash SIGTERMs a job it holds for stopped), once it has
            # taken the SIGCHLD of our SIGCONT
            wait_for(lambda: _says_running(login), what="the old shell to know its job runs again")
        login.drop()
        wait_for(lambda: _gone(login.shell_pid), what="the old shell to hang up and exit")
        wait_for(lambda: proc.read_status(job)["SigIgn"] == own, what="its own SIGHUP action back")
        relay.write(b"after the drop\n")
        relay.expect("got: after the drop")
        os.close(relay.master)  # the new terminal closes (its window), the relay is told by SIGHUP
        relay.master = -1
        wait_for(lambda: _gone(job), what="the job to be hung up")
        relay.wait()
    finally:
        relay.close()


@pytest.mark.parametrize("who", ["ordinary", "root"])
def test_attach_keeps_vim_of_an_ssh_shell_alive_when_the_connection_drops(sshd, ordinary_user, user_install,
                                                                          who):
    """The issue's own case: vim, moved by `reptyr-tmux attach`, the ssh connection dropped. vim handles
    SIGHUP itself ("Vim: Caught deadly signal HUP"): it lives, edits on, its handler is back, and closing
    the new terminal ends it through that handler."""
    user = ordinary_user if who == "ordinary" else None
    login = sshd.login(user or "root")
    login.run(f"vim -u NONE -N -n {text_file(ordinary_user)}")  # -n: no swap file left by the hangup
    vim = job_of(login, "vim")
    login.expect("line 20")  # drawn: its signal handlers are set by now
    own = {key: proc.read_status(vim)[key] for key in ("SigIgn", "SigCgt")}
    relay = ChildTerminal(*spawn_on_pty([*user_install, "attach", str(vim)], user_env(user) if user else
                                        dict(os.environ), user))
    try:
        wait_for(lambda: proc.fd_target(vim, 0) != login.pts and _let_go(vim), what="the move")
        login.expect_prompt()
        wait_for(lambda: _says_running(login), what="the old shell to know its job runs again")
        login.drop()
        wait_for(lambda: _gone(login.shell_pid), what="the old shell to hang up and exit")
        wait_for(lambda: {key: proc.read_status(vim)[key] for key in own} == own, what="its own actions back")
        relay.write(b"Oafter-the-drop\x1b")
        relay.expect("after-the-drop")
        os.close(relay.master)  # its new terminal closes
        relay.master = -1
        wait_for(lambda: _gone(vim), what="vim to be hung up")
        relay.wait()
    finally:
        relay.close()
