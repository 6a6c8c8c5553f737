"""Steal mode: a whole terminal session (shell, jobs, children) moves into a pane, behind a relay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import CLI, ECHO, MACHINE, VICTIMS, Tmux, gone, wait_for

from reptyr_tmux import proc


class SshdLike:
    def __init__(self, tmp_path, sessions: int = 2):
        self.logdir = tmp_path
        self.process = subprocess.Popen([sys.executable, str(VICTIMS / "sshd_like.py"), str(tmp_path),
                                         str(sessions)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdout.readline().strip() == "ready"
        self.shells = wait_for(lambda: len(self.children()) == sessions and self.children(),
                               what="the shells")
        for n in range(sessions):
            self.wait_log(n, "$ ")

    def children(self) -> list[int]:
        return sorted(s.pid for s in proc.all_stats() if s.ppid == self.process.pid and s.state != "Z")

    def type(self, n: int, text: str) -> None:
        self.process.stdin.write(f"{n} {text}\n")
        self.process.stdin.flush()

    def log(self, n: int) -> str:
        with open(self.logdir / f"{n}.log", "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, n: int, text: str) -> None:
        try:
            wait_for(lambda: text in self.log(n), 10, f"{text!r} in session {n}'s log")
        except AssertionError as e:
            raise AssertionError(f"{e}; the log ends with {self.log(n)[-300:]!r}") from None

    def job(self, n: int) -> int:
        """The foreground job of session n (a child of its shell)."""
        shell = self.shells[n]
        return wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell), None),
                        what="the job")

    def close(self) -> None:
        for pid in self.shells:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.kill()
        self.process.wait()


@pytest.fixture
def sshd(tmp_path):
    holder = SshdLike(tmp_path)
    yield holder
    holder.close()


def adopt(tmux: Tmux, pid: int, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", *extra, str(pid)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result


def test_job_with_children_moves_with_its_session(sshd, tmux):
    sshd.type(0, "bash -c 'while :; do echo tick $RANDOM; sleep 0.2; done'")
    sshd.wait_log(0, "tick")
    job = sshd.job(0)
    result = adopt(tmux, job, "--mode", "steal")
    assert "steal mode" in result.stdout
    tmux.wait_screen("main:1", "tick")
    time.sleep(0.5)
    frozen = sshd.log(0)
    time.sleep(0.6)
    assert sshd.log(0) == frozen  # the old holder no longer reads the terminal
    relay = int(tmux.pane("main:1", "#{pane_pid}"))
    assert proc.read_stat(relay).comm == "reptyr-relay"
    rss_kb = proc.resident_kb(relay)
    print(f"relay Rss ({MACHINE}): {rss_kb} kB (VmRSS {proc.read_status(relay)['VmRSS']})")
    assert rss_kb < 1700  # the native relay (x86_64, aarch64); reptyr's proxy holds ~1.8 MB
    tmux("send-keys", "-t", "main:1", "C-c")
    wait_for(lambda: gone(job), what="^C to end the job")
    tmux("send-keys", "-t", "main:1", "echo typed-in-pane", "Enter")
    tmux.wait_screen("main:1", "typed-in-pane\n")
    sshd.type(1, "echo other-session-fine")  # the holder's other session is untouched
    sshd.wait_log(1, "other-session-fine\r\n")


def test_pipeline_and_resize_reach_the_foreground_job(sshd, tmux):
    sshd.type(0, f"{' '.join(ECHO)} | cat")
    sshd.wait_log(0, "ready")
    job = sshd.job(0)
    assert "steal mode" in adopt(tmux, job, "--mode", "steal").stdout
    for width in (77, 78, 79):  # (a resize lost once in a clean-root CI run: see the session note)
        tmux("resize-window", "-t", "main:1", "-x", str(width), "-y", "21")
        try:
            tmux.wait_screen("main:1", f"winch 21x{width}", 4)
            break
        except AssertionError:
            if width == 79:
                raise
    tmux("send-keys", "-t", "main:1", "through the pipe", "Enter")
    tmux.wait_screen("main:1", "got: through the pipe")


def own_sighup_back(leader: int) -> bool:
    """The steal's hand-back is over: the leader has its SIGHUP action again and nobody traces it (up
    to HUP_GRACE_S after an adoption, a detached child of ours does that by ptrace, and another
    adoption meanwhile is refused as one racing another reptyr-tmux)."""
    status = proc.read_status(leader)
    return status["TracerPid"] == "0" and not proc.has_signal(proc.signal_mask(status, "SigIgn"),
                                                               signal.SIGHUP)


def test_readopt_twice_and_session_end_closes_the_pane(sshd, tmux):
    shell = sshd.shells[0]
    sshd.type(0, "sleep 300")
    job = sshd.job(0)
    adopt(tmux, job, "--mode", "steal")
    first = tmux.windows()[-1]
    wait_for(lambda: own_sighup_back(shell), what="the shell's SIGHUP action back")
    adopt(tmux, job, "--mode", "steal")
    wait_for(lambda: first not in tmux.windows(), what="the first relay pane to close")
    wait_for(lambda: own_sighup_back(shell), what="the shell's SIGHUP action back")
    adopt(tmux, job, "--mode", "steal")
    last = tmux.windows()[-1]
    tmux("send-keys", "-t", f"main:{last}", "C-c")
    tmux("send-keys", "-t", f"main:{last}", "echo again", "Enter")
    tmux.wait_screen(f"main:{last}", "again\n")
    tmux("send-keys", "-t", f"main:{last}", "exit", "Enter")
    wait_for(lambda: gone(shell), what="the shell to exit")
    wait_for(lambda: tmux.windows() == ["0"], what="the relay pane to close with the session")


def test_attach_T_in_the_current_terminal(sshd, spawn):
    import pty

    from conftest import Terminal

    sshd.type(0, "bash -c 'while :; do echo tock; sleep 0.2; done'")
    sshd.wait_log(0, "tock")
    job = sshd.job(0)
    pid, master = pty.fork()
    if pid == 0:
        os.execvp(CLI[0], [*CLI, "attach", "-T", str(job)])
    here = Terminal(master, "?")
    spawn.terminals.append(here)
    here.expect("tock")
    here.write(b"\x03")
    here.write(b"echo via-T\r")
    here.expect("via-T\r\n")
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_shell_job_moves_with_its_shell_and_survives_the_old_terminal(sshd, tmux):
    """Auto mode: a shell's job would be hung up by its shell when the old terminal goes, so the
    whole session moves (session mode, no relay); then the old 'sshd' may go away entirely."""
    sshd.type(0, f"{' '.join(ECHO)}")
    sshd.wait_log(0, "ready")
    job = sshd.job(0)
    result = adopt(tmux, job)
    assert "session mode" in result.stdout and "would hang it up" in result.stdout
    sshd.process.kill()  # the old terminal's holder is gone: no SIGHUP may reach the job
    sshd.process.wait()
    time.sleep(0.5)
    assert not gone(job)
    tmux("send-keys", "-t", "main:1", "after the old terminal closed", "Enter")
    tmux.wait_screen("main:1", "got: after the old terminal closed")


def sighup_disposition(pid: int) -> tuple[str, str]:
    status = proc.read_status(pid)
    return status["SigIgn"], status["SigCgt"]


def test_the_leader_gets_its_sighup_action_back_after_a_steal(sshd, tmux):
    """Ignored while the old holder may still hang it up; given back by a detached child once that
    holder has exited or the grace is over, so the adoption itself never waits for it."""
    sshd.type(0, "sleep 300")
    job, leader = sshd.job(0), sshd.shells[0]
    before = sighup_disposition(leader)
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", "--mode", "steal", str(job)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: sighup_disposition(leader) == before, 3, "the leader's SIGHUP action back")
    assert not gone(job)


def test_fault_before_the_holder_lets_go_gives_the_session_back(sshd, tmux):
    sshd.type(0, "sleep 300")
    job, leader = sshd.job(0), sshd.shells[0]
    before = sighup_disposition(leader)
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", "--mode", "steal", str(job)],
                            capture_output=True, text=True,
                            env=dict(os.environ, REPTYR_TMUX_FAULT="leader-ignores-sighup"))
    assert result.returncode != 0 and "leader-ignores-sighup" in result.stderr
    wait_for(lambda: tmux.windows() == ["0"], what="the relay pane to close")
    assert sighup_disposition(leader) == before and not gone(job)
    sshd.type(0, "\x03")  # ^C through the old holder: it still reads and writes the terminal
    sshd.type(0, "echo back-with-sshd")
    sshd.wait_log(0, "back-with-sshd\r\n")


@pytest.mark.parametrize("step", ["silence-holder-0", "hand-back-sighup"])
def test_fault_after_the_holder_let_go_keeps_the_session_in_the_pane(sshd, tmux, step):
    """Past the one-way step, rolling back could strand the session: it stays with the relay."""
    sshd.type(0, "sleep 300")
    job, leader = sshd.job(0), sshd.shells[0]
    before = sighup_disposition(leader)
    result = subprocess.run([*CLI, "adopt", "-L", tmux.socket, "-t", "main", "--mode", "steal", str(job)],
                            capture_output=True, text=True, env=dict(os.environ, REPTYR_TMUX_FAULT=step))
    assert result.returncode != 0 and "the session moved, but then" in result.stderr
    wait_for(lambda: sighup_disposition(leader) == before, what="the leader's SIGHUP action back")
    assert not gone(job)
    tmux("send-keys", "-t", "main:1", "C-c")
    tmux("send-keys", "-t", "main:1", "echo still-in-the-pane", "Enter")
    tmux.wait_screen("main:1", "still-in-the-pane\n")


def test_master_is_passed_over_a_socket_where_pidfd_getfd_is_missing(sshd, monkeypatch):
    """Linux < 5.6: the holder itself sends us its master (SCM_RIGHTS), and is left as it was."""
    from reptyr_tmux.engine.steal import find_session, grab_master

    monkeypatch.setenv("REPTYR_TMUX_NO_PIDFD_GETFD", "1")
    session = find_session(sshd.shells[0])
    holder = session.holders[0]
    fds_before = {fd: proc.fd_target(holder.pid, fd) for fd in proc.open_fds(holder.pid)}
    master = grab_master(holder)
    try:
        with open(f"/proc/self/fdinfo/{master}") as f:
            assert f"tty-index:\t{session.tty_index}\n" in f.read()
        assert {fd: proc.fd_target(holder.pid, fd) for fd in proc.open_fds(holder.pid)} == fds_before
    finally:
        os.close(master)
    sshd.type(0, "echo holder-still-fine")
    sshd.wait_log(0, "holder-still-fine\r\n")


def test_steal_mode_end_to_end_without_pidfd_getfd(sshd, tmp_path):
    server = Tmux(f"reptyr-test-nogetfd-{os.getpid()}")
    env = dict(os.environ, REPTYR_TMUX_NO_PIDFD_GETFD="1")
    subprocess.run([*server.argv, "-f", "/dev/null", "new-session", "-d", "-s", "main", "-x", "100",
                    "-y", "30"], check=True, env=env)  # its panes inherit the setting
    try:
        sshd.type(0, "bash -c 'while :; do echo old-kernel-tick; sleep 0.2; done'")
        sshd.wait_log(0, "old-kernel-tick")
        result = subprocess.run([*CLI, "adopt", "-L", server.socket, "-t", "main", "--mode", "steal",
                                 str(sshd.job(0))],
                                capture_output=True, text=True, env=env, timeout=30)
        assert result.returncode == 0, result.stderr
        relay = int(server.pane("main:1", "#{pane_pid}"))
        assert "python" in os.readlink(f"/proc/{relay}/exe")  # the native relay needs pidfd_getfd
        server.wait_screen("main:1", "old-kernel-tick")
        server("send-keys", "-t", "main:1", "C-c")
        server("send-keys", "-t", "main:1", "echo via-socket", "Enter")
        server.wait_screen("main:1", "via-socket\n")
    finally:
        server.kill()


def test_steal_refuses_where_fdinfo_has_no_tty_index(sshd, monkeypatch):
    """Without tty-index only running TIOCGPTN inside every pty holder would tell: refused instead."""
    from reptyr_tmux.engine.steal import find_session
    from reptyr_tmux.errors import Refusal

    monkeypatch.setenv("REPTYR_TMUX_NO_TTY_INDEX", "1")
    fds_before = {fd: proc.fd_target(sshd.process.pid, fd) for fd in proc.open_fds(sshd.process.pid)}
    with pytest.raises(Refusal, match="no tty-index in /proc/PID/fdinfo.*use --mode attach"):
        find_session(sshd.shells[0])
    assert {fd: proc.fd_target(sshd.process.pid, fd) for fd in proc.open_fds(sshd.process.pid)} == fds_before
    sshd.type(0, "echo not-asked")
    sshd.wait_log(0, "not-asked\r\n")
