"""The attach engine on real processes: terminals, sessions, signals, threads, 32-bit targets."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import termios
import time

import pytest
from conftest import ECHO, wait_for

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import attach


def move(spawn, victim, **kwargs):
    """Attach `victim` to a fresh pty; return the new terminal (the test keeps no slave fd open)."""
    term, slave = spawn.new_terminal()
    path = os.ttyname(slave)
    try:
        result = attach(victim.pid, path, **kwargs)
    finally:
        os.close(slave)
    term.slave_path = path
    return term, result


def test_echo_round_trip_and_proc_facts(spawn):
    victim = spawn.on_pty(ECHO)
    before = victim.stat()
    term, result = move(spawn, victim)
    # The SIGWINCH sent right after the detach must reach the handler and interrupt the read: a
    # hand-made syscall restart would swallow it (regression: ^C then went unnoticed 1 run in 3).
    term.expect("winch")
    term.write(b"hello\n")
    term.expect("got: hello")
    after = victim.stat()
    assert after.tty_dev == os.stat(term.slave_path).st_rdev != before.tty_dev
    assert after.sid == victim.pid
    assert all(target == term.slave_path for fd, target in victim.fd_targets().items() if fd <= 2)
    assert result.fds == [0, 1, 2]


def test_shell_job_gets_new_session_and_shell_gets_prompt_back(spawn):
    victim = spawn.in_shell(" ".join(ECHO))
    shell_sid = victim.stat().sid
    term, result = move(spawn, victim)
    assert result.stopped_job
    victim.term.expect("Stopped")  # the shell noticed and took its terminal back
    after = victim.stat()
    assert after.sid == after.pgid == victim.pid != shell_sid
    assert after.tty_dev == os.stat(term.slave_path).st_rdev
    term.write(b"from the new terminal\n")
    term.expect("got: from the new terminal")
    assert after.state != "T" or wait_for(lambda: victim.stat().state != "T")


def test_no_zombie_left_by_the_dummy_child(spawn):
    victim = spawn.in_shell(" ".join(ECHO))
    move(spawn, victim)
    time.sleep(0.2)
    zombies = [s for s in proc.all_stats() if s.ppid == victim.pid]
    assert zombies == []


def test_ctrl_c_and_ctrl_z_reach_the_target(spawn):
    # ^Z delivers SIGTSTP; at default action the kernel drops it for the now orphaned group (no shell
    # in the new terminal could resume it), so the victim catches it to show it arrived.
    victim = spawn.on_pty([*ECHO, "--catch-int", "--catch-tstp"])
    term, _ = move(spawn, victim)
    term.write(b"\x03")
    term.expect("sigint")
    term.write(b"\x1a")
    term.expect("sigtstp")


def test_ctrl_c_kills_a_target_that_does_not_catch_it(spawn):
    victim = spawn.in_shell(" ".join(ECHO))
    term, _ = move(spawn, victim)
    term.write(b"\x03")
    term.expect("KeyboardInterrupt", timeout=60)  # its traceback takes >10 s to print under emulation
    wait_for(lambda: not victim.alive(), what="^C to end the target")


def test_window_size_change_reaches_the_target(spawn):
    victim = spawn.on_pty(ECHO)
    term, _ = move(spawn, victim)
    fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("hhhh", 33, 111, 0, 0))
    term.expect("winch 33x111")


def test_closing_old_terminal_spares_target_and_closing_new_one_hangs_it_up(spawn):
    victim = spawn.on_pty(ECHO)
    sighup_before = victim_sighup_disposition(victim.pid)
    term, _ = move(spawn, victim)
    assert victim_sighup_disposition(victim.pid) == sighup_before  # no lasting SIG_IGN, unlike reptyr
    victim.term.close()
    time.sleep(0.3)
    assert victim.alive()
    term.write(b"still here\n")
    term.expect("got: still here")
    term.close()
    _, status = os.waitpid(victim.pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP


def victim_sighup_disposition(pid: int) -> tuple[bool, bool]:
    status = proc.read_status(pid)
    return tuple(proc.has_signal(proc.signal_mask(status, key), signal.SIGHUP)
                 for key in ("SigIgn", "SigCgt"))


def test_target_sleeping_in_nanosleep_keeps_its_rhythm(spawn):
    victim = spawn.on_pty([*ECHO, "--sleep"])
    victim.term.expect("woke")
    term, _ = move(spawn, victim)
    term.expect("woke")
    term.expect("woke")
    assert victim.alive()


def test_interrupted_relative_nanosleep_keeps_its_deadline(spawn, sleeper):
    """The move interrupts a relative nanosleep; it must go on to its first deadline (the kernel's
    restart block), not sleep its whole interval again from the move on."""
    interval, before_move = 6, 1.5
    victim = spawn.on_pty([sleeper, str(interval)])
    wait_for(lambda: victim.stat().state == "S", what="the sleeper to fall asleep")
    time.sleep(before_move)  # part of the interval passes first: a restart from scratch sleeps it again
    term, _ = move(spawn, victim)
    report = term.expect(" s, result 0", timeout=3 * interval)
    slept = float(report.rsplit("slept ", 1)[1])
    assert interval - 0.1 < slept < interval + before_move - 0.5, f"slept {slept} s of {interval} s"


@pytest.mark.parametrize("attempt", range(10))
def test_threaded_target_attaches_every_time(spawn, attempt):
    victim = spawn.on_pty([*ECHO, "--threads", "3"])
    term, _ = move(spawn, victim)
    term.write(b"threads ok\n")
    term.expect("got: threads ok")


def test_32bit_target_blocked_in_read(spawn, echo32):
    victim = spawn.on_pty([echo32])
    term, _ = move(spawn, victim)
    term.write(b"thirty-two\n")
    term.expect("got: thirty-two")
    assert victim.stat().tty_dev == os.stat(term.slave_path).st_rdev


def test_32bit_target_in_nanosleep_restarts_it(spawn, echo32):
    victim = spawn.on_pty([echo32, "sleep"])
    victim.term.expect("woke")
    term, _ = move(spawn, victim)
    seen = term.expect("woke") + term.expect("woke")
    assert "failed" not in seen


def test_32bit_shell_job(spawn, echo32):
    victim = spawn.in_shell(echo32)
    term, _ = move(spawn, victim)
    term.write(b"job32\n")
    term.expect("got: job32")
    assert victim.stat().sid == victim.pid


def test_stdio_mode_on_a_target_without_terminal(spawn):
    victim = spawn.detached(ECHO)
    assert victim.stat().tty_dev is None
    term, result = move(spawn, victim, force_stdio=True)
    assert result.fds == [0, 1, 2]
    term.write(b"no tty before\n")
    term.expect("got: no tty before")
    assert victim.stat().tty_dev == os.stat(term.slave_path).st_rdev


def test_a_stopped_target_is_moved_and_continued(spawn):
    victim = spawn.on_pty(ECHO)
    os.kill(victim.pid, signal.SIGSTOP)
    wait_for(lambda: victim.stat().state == "T", what="the stop")
    term, _ = move(spawn, victim)
    term.write(b"awake\n")
    term.expect("got: awake")
