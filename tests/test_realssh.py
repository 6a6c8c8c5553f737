"""The real-ssh test infrastructure works: an ordinary user logged in over a real sshd with each shell,
the product runnable by that user, a tmux client of that user, and everything gone afterwards."""

from __future__ import annotations

import os
import pwd
import shlex
import subprocess

import pytest
from conftest import Client, wait_for
from realssh import (
    SshLogin,
    as_user,
    new_user,
    running_sshd,
    user_pids,
    user_tmux,
)

from reptyr_tmux import proc

SHELLS = ["bash", "zsh", "fish", "dash"]


def alive(pid: int) -> bool:
    try:
        return proc.read_stat(pid).state not in "ZX"
    except OSError:
        return False


def assert_leads_its_session_on_the_pts(login: SshLogin, uid: int) -> None:
    stat = proc.read_stat(login.shell_pid)
    assert stat.sid == login.shell_pid
    assert stat.tty_nr == os.stat(login.pts).st_rdev
    assert login.pts.startswith("/dev/pts/")
    assert int(proc.read_status(login.shell_pid)["Uid"].split()[0]) == uid
    nearest = proc.cmdline(login.sshd_pids[0])[0]
    assert nearest.startswith("sshd: ") and nearest.endswith(f"@{login.pts[5:]}"), nearest


@pytest.mark.parametrize("shell", SHELLS)
def test_ordinary_user_logs_in_over_ssh_with_each_shell(sshd, ordinary_user, shell):
    with sshd.login(ordinary_user, shell, env={"RTU_GREETING": "hello"}) as login:
        assert proc.read_stat(login.shell_pid).comm == shell
        assert_leads_its_session_on_the_pts(login, ordinary_user.uid)
        assert [proc.cmdline(pid)[0] for pid in login.sshd_pids[1:]] == [f"sshd: {ordinary_user.name} [priv]"]
        # As on any real server: the user may look into (and trace) its shell, not into its sshd.
        assert as_user(ordinary_user, ["ls", f"/proc/{login.shell_pid}/fd"]).returncode == 0
        assert as_user(ordinary_user, ["ls", f"/proc/{login.sshd_pids[0]}/fd"]).returncode != 0
        login.run('echo "out:$RTU_GREETING:$USER"; tty')
        seen = login.expect_prompt()
        assert f"out:hello:{ordinary_user.name}" in seen and login.pts in seen


def test_root_logs_in_too(sshd):
    with sshd.login("root") as login:
        assert_leads_its_session_on_the_pts(login, 0)
        assert [proc.cmdline(pid)[0] for pid in login.sshd_pids] == [f"sshd: root@{login.pts[5:]}"]
        login.run("echo uid=$(id -u)")
        assert "uid=0\r\n" in login.expect_prompt()


@pytest.mark.parametrize("shell", SHELLS)
def test_dropped_connection_hangs_the_session_up(sshd, ordinary_user, shell):
    """Facts of OpenSSH 9.2 the product's users meet: the client killed, sshd ends at once and the
    kernel hangs the pty up (SIGHUP to the shell); bash, zsh and fish pass SIGHUP to every job, dash
    only the foreground one gets it (from the kernel), so dash's background jobs live on."""
    login = sshd.login(ordinary_user, shell)
    try:
        login.run("sleep 300 &")
        login.expect_prompt()
        login.run("sleep 301")
        wait_for(lambda: len(login.session()) == 3, what="both jobs to start")
        shell_pid, background, foreground = login.session()
        login.drop()
        wait_for(lambda: not any(map(alive, [shell_pid, foreground, *login.sshd_pids])), 10, "the hangup")
        if shell == "dash":
            assert alive(background), "dash does not hang its background jobs up"
        else:
            wait_for(lambda: not alive(background), what="the background job's SIGHUP")
    finally:
        login.close()
    assert not login.session()


def test_ordinary_user_runs_the_product_from_its_ssh_shell(sshd, ordinary_user, user_install):
    result = as_user(ordinary_user, [*user_install, "--version"])
    assert result.returncode == 0 and result.stdout.startswith("reptyr-tmux "), result.stderr
    with sshd.login(ordinary_user) as login:
        login.run(f"{shlex.join(user_install)} --version")
        assert "reptyr-tmux " in login.expect_prompt()


def test_as_user_gives_a_login_environment_and_no_groups(ordinary_user, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/0")
    monkeypatch.setenv("TMUX_TMPDIR", "/root")
    env = dict(line.split("=", 1) for line in as_user(ordinary_user, ["env"]).stdout.splitlines())
    assert env["HOME"] == str(ordinary_user.home) and env["USER"] == env["LOGNAME"] == ordinary_user.name
    assert "XDG_RUNTIME_DIR" not in env and "TMUX_TMPDIR" not in env and "TMUX" not in env
    assert as_user(ordinary_user, ["id", "-G"]).stdout.split() == [str(ordinary_user.gid)]


def test_keys_typed_into_a_users_attached_tmux_client_reach_its_pane(ordinary_user):
    with user_tmux(ordinary_user) as tmux:
        client = Client(tmux)  # as the server's user
        try:
            assert tmux.pane("main", "#{client_tty}") == client.term.slave_path
            assert int(proc.read_status(client.pid)["Uid"].split()[1]) == ordinary_user.uid
            client.type(b"echo typed-$((6*7))\r")
            tmux.wait_screen("main", "typed-42")
            client.type(b"\x02c")  # prefix + c: a new window, which the client draws in its status line
            client.wait("1:bash*")
        finally:
            client.close()


def test_user_and_sshd_leave_nothing_behind():
    with new_user() as user, running_sshd(user.name) as server:
        login = server.login(user)
        login.run("sleep 300 &")  # a job the login's close() must end
        login.expect_prompt()
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        daemon = as_user(user, ["setsid", "-f", "sleep", "300"], **quiet)  # escaped from every session
        assert daemon.returncode == 0
        listener, connection = server.process.pid, login.sshd_pids
        files = [server.workdir, user.home]
    assert not user_pids(user.uid)
    assert not any(map(alive, [listener, *connection]))
    assert not any(path.exists() for path in files)
    with pytest.raises(KeyError):
        pwd.getpwnam(user.name)


def test_a_login_that_fails_says_why_and_leaves_no_client(sshd):
    with pytest.raises(AssertionError, match="ssh login of nobody failed"):
        sshd.login("nobody", timeout=5)
    assert sshd.logins[-1].user == "nobody" and not sshd.logins[-1].alive()
