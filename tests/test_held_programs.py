"""What real programs do around a move (issue 12): company in their session, fds that change, fd flags,
a tool that is stopped or slow, two tools at once."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import sys
from collections import Counter

import pytest
from conftest import CLI, ECHO, MACHINE, VICTIMS, Terminal, wait_for
from test_attach import move
from test_faults import refused_untouched, snapshot

from reptyr_tmux import proc
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.errors import Refusal, ReptyrError


def new_tty(spawn) -> tuple:
    term, slave = spawn.new_terminal()
    term.slave_path = os.ttyname(slave)
    return term, slave


def untouched(pid: int) -> dict:
    """snapshot() but its memory map: bash grows its heap by itself."""
    return {key: value for key, value in snapshot(pid).items() if key != "maps"}


def test_a_shell_with_a_background_job_is_refused_and_nobody_loses_the_terminal(spawn, shell):
    shell.run("sleep 1000 &")
    job = wait_for(lambda: next((s for s in proc.all_stats() if s.sid == shell.pid and s.comm == "sleep"),
                                None), what="the background job")
    shell_before, job_before = untouched(shell.pid), untouched(job.pid)
    term, slave = new_tty(spawn)
    try:
        with pytest.raises(Refusal, match="take the terminal from its other processes.*adopt"):
            attach(shell.pid, term.slave_path)
    finally:
        os.close(slave)
    assert untouched(shell.pid) == shell_before and untouched(job.pid) == job_before
    assert proc.read_stat(job.pid).tty_nr == proc.read_stat(shell.pid).tty_nr != 0
    shell.run("jobs", "sleep 1000")  # still its job, on its terminal


FLIPPER = [sys.executable, str(VICTIMS / "fd_flipper.py")]
MOVES = 20


def test_an_fd_that_changes_between_survey_and_hold_is_decided_from_what_is_held(spawn, tmp_path):
    """fd 3 flips between /dev/tty and a log file every ms: the fds are read again once it is held, so
    the new terminal never lands over the log fd (a log line would show on the terminal)."""
    victim = spawn.on_pty([*FLIPPER, str(tmp_path / "log")])
    for _ in range(MOVES):
        term, slave = new_tty(spawn)
        try:
            attach(victim.pid, term.slave_path)
        finally:
            os.close(slave)
        assert b"LOG" not in term.quiet_for(0.02)
    assert victim.alive()


FD_FLAGS = [sys.executable, str(VICTIMS / "fd_flags.py")]


def flags_of(pid: int, fd: int) -> int:
    return proc.fd_flags(pid, fd) & (os.O_ACCMODE | os.O_NONBLOCK | os.O_APPEND | os.O_ASYNC)


@pytest.mark.skipif(os.geteuid() != 0 or not os.access("/dev/console", os.W_OK), reason="needs root")
def test_each_fd_keeps_its_access_mode_flags_and_owner(spawn):
    victim = spawn.on_pty([*FD_FLAGS, "--console"])
    before = {fd: flags_of(victim.pid, fd) for fd in (0, 3, 4)}
    console = proc.fd_target(victim.pid, 4)
    term, slave = new_tty(spawn)
    try:
        attach(victim.pid, term.slave_path)
    finally:
        os.close(slave)
    assert {fd: flags_of(victim.pid, fd) for fd in (0, 3, 4)} == before
    assert proc.fd_target(victim.pid, 3) == term.slave_path  # moved, still non-blocking
    assert proc.fd_target(victim.pid, 4) == console  # the console is not its terminal: left alone
    term.write(b"typed\n")
    term.expect("sigio got: typed")  # SIGIO still comes to it, for input on the new terminal


def test_a_session_members_write_only_fd_stays_write_only(spawn, shell):
    from test_session import move

    shell.run(f"exec 7>/dev/tty 8</dev/tty; {sys.executable} -c 'import time; time.sleep(1000)' &")
    before = {fd: flags_of(shell.pid, fd) for fd in (7, 8)}
    term, _ = move(spawn, shell, shell.pid)
    assert {fd: flags_of(shell.pid, fd) for fd in (7, 8)} == before == {7: os.O_WRONLY, 8: os.O_RDONLY}
    term.write(b"echo hi >&7\n")
    term.expect("hi")


def moved_and_let_go(pid: int, tty_path: str) -> bool:
    return (proc.fd_target(pid, 0) == tty_path and proc.read_status(pid)["TracerPid"] == "0"
            and proc.read_stat(pid).state in "SR")


def test_verbose_output_nobody_reads_never_keeps_the_target_stopped(spawn):
    """-V with a stderr that is full (a pipe nobody reads): the move is done and the target let go; the
    lines come out once someone reads."""
    victim = spawn.on_pty(ECHO)
    readable, writable = os.pipe()
    os.set_blocking(writable, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(writable, b"x" * 4096)
    os.set_blocking(writable, True)
    tool, here = pty.fork()
    if tool == 0:
        os.dup2(writable, 2)
        os.execvp(CLI[0], [*CLI, "attach", "-V", str(victim.pid)])
    os.close(writable)
    old_tty = proc.fd_target(victim.pid, 0)
    term = Terminal(here, "?")
    spawn.terminals.append(term)
    try:
        relay_tty = wait_for(lambda: (t := proc.fd_target(victim.pid, 0)) != old_tty and t, 10, "the move")
        wait_for(lambda: moved_and_let_go(victim.pid, relay_tty), 10, "the target to be let go")
        drained = b""
        while b"check-new-tty" not in drained:
            drained += os.read(readable, 65536)
        term.expect("winch")
    finally:
        os.kill(tool, signal.SIGKILL)
        os.waitpid(tool, 0)
        os.close(readable)


def test_a_stop_sent_to_the_tool_while_it_holds_the_target_waits_until_it_let_go(spawn):
    """^Z (SIGTSTP) reaching the engine right after infect: it finishes first, then stops."""
    victim = spawn.on_pty(ECHO)
    term, slave = new_tty(spawn)
    code = ("import signal; from reptyr_tmux.engine.attach import attach; "
            "signal.signal(signal.SIGTSTP, signal.SIG_DFL); "  # (whatever the test runner had)
            f"attach({victim.pid}, {term.slave_path!r}); print('done', flush=True)")
    env = dict(os.environ, REPTYR_TMUX_FAULT="infect:SIGTSTP")
    tool = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE)
    try:
        wait_for(lambda: tool.poll() is not None or proc.read_stat(tool.pid).state == "T", 10,
                 "the tool to stop")
        # (The kernel drops a ^Z to an orphaned process group: pytest itself must not lead its session.)
        assert tool.returncode is None, (f"the tool never stopped, it exited {tool.returncode}: "
                                         f"{tool.stdout.read()!r}")
        assert moved_and_let_go(victim.pid, term.slave_path)
        os.kill(tool.pid, signal.SIGCONT)
        assert tool.stdout.readline() == b"done\n"
    finally:
        os.close(slave)
        tool.kill()
        tool.wait()
        tool.stdout.close()


ROUNDS = 6


def first_to_exit(pids) -> tuple[int, int] | None:
    for pid in pids:
        waited, status = os.waitpid(pid, os.WNOHANG)
        if waited:
            return pid, status
    return None


def test_a_first_look_mid_move_is_told_as_a_move_not_as_what_it_seemed(spawn, monkeypatch):
    """Another reptyr-tmux between its TIOCNOTTY and TIOCSCTTY: our first look at /proc shows no
    controlling terminal, and by our next look it is done and has let go. We say it was moved, not "no
    terminal open" (CI saw that once, in the two-tools test below): the survey's second look at a
    process nobody holds now compares its session, group and terminal, not whether it is held."""
    from reptyr_tmux.engine import survey

    victim = spawn.on_pty(ECHO)
    read_stat, looks = proc.read_stat, []

    def first_look_mid_move(pid):
        looks.append(pid)
        stat = read_stat(pid)
        return stat._replace(tty_nr=0) if len(looks) == 1 else stat  # (then: as it is, done)

    monkeypatch.setattr(survey.proc, "read_stat", first_look_mid_move)
    with pytest.raises(Refusal, match=r"was moved to pts/\d+ \(from no tty\) while this command got ready"):
        survey.survey(victim.pid)


def test_two_tools_at_once_one_moves_it_and_the_other_says_so(spawn):
    from test_cli import cli_on_a_terminal

    for _ in range(ROUNDS):
        victim = spawn.on_pty(ECHO)
        tools = dict(cli_on_a_terminal("attach", str(victim.pid)) for _ in range(2))
        spawn.terminals.extend(tools.values())
        try:
            loser, status = wait_for(lambda tools=tools: first_to_exit(tools), 20, "one tool to give up")
            said = tools[loser].quiet_for(0.2).decode()
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0, said
            assert "another reptyr-tmux" in said, said
            print(said.strip())
            winner = next(pid for pid in tools if pid != loser)
            tools[winner].expect("winch")
            tools[winner].write(b"whose?\n")
            tools[winner].expect("got: whose?")  # the program is the winner's, and works there
        finally:
            for pid in tools:
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)


def test_a_relay_whose_program_is_taken_elsewhere_says_so_and_fails(spawn):
    from test_cli import cli_on_a_terminal

    victim = spawn.on_pty(ECHO)
    tool, here = cli_on_a_terminal("attach", str(victim.pid))
    spawn.terminals.append(here)
    here.expect("winch")
    term, slave = new_tty(spawn)
    try:
        attach(victim.pid, term.slave_path)  # a later move, to another terminal
    finally:
        os.close(slave)
    _, status = os.waitpid(tool, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    here.expect("was taken to pts/")


@pytest.fixture(scope="session")
def arch_flipper(tmp_path_factory) -> tuple[str, str]:
    """The victim's 64-bit and 32-bit static builds (gcc-multilib)."""
    from conftest import build_c

    if MACHINE != "x86_64":
        pytest.skip(f"its 32-bit half is an i386 program: it needs an x86_64 kernel, not {MACHINE}")
    return (build_c(tmp_path_factory, "arch_flipper.c", "-static"),
            build_c(tmp_path_factory, "arch_flipper.c", "-static", "-m32"))


# Moves the pid it is given to each terminal named on its stdin; one line of outcome per terminal:
# moved, or the error's class and sentence.
ATTACH_DRIVER = """
import sys
from reptyr_tmux.engine.attach import attach
from reptyr_tmux.errors import ReptyrError
for tty in sys.stdin:
    try:
        attach(int(sys.argv[1]), tty.strip())
        print("moved", flush=True)
    except ReptyrError as e:
        print(f"{type(e).__name__}: {e}", flush=True)
"""
ARCH_ATTEMPTS = 40
ANSWER_S = 15


def generation(pid: int) -> str:
    """The arch flipper's count of execs (its cmdline reads empty while it execs)."""
    return "".join(proc.cmdline(pid)[3:4])


def test_a_program_that_execs_between_architectures_is_moved_or_refused_never_harmed(spawn, arch_flipper):
    """It execs 64-bit, 32-bit, 64-bit... all the time: the architecture is read from the stopped process,
    so no call is made the other architecture's way (a SIGILL, a spinning target, another call run)."""
    bits64, bits32 = arch_flipper
    victim = spawn.on_pty([bits64, bits32, bits64])
    ignored = proc.read_status(victim.pid)["SigIgn"]
    driver = subprocess.Popen([sys.executable, "-c", ATTACH_DRIVER, str(victim.pid)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    outcomes: Counter[str] = Counter()
    try:
        for _ in range(ARCH_ATTEMPTS):
            term, slave = new_tty(spawn)
            before = proc.fd_target(victim.pid, 0)
            driver.stdin.write(term.slave_path + "\n")
            driver.stdin.flush()
            ready, _, _ = select.select([driver.stdout], [], [], ANSWER_S)
            os.close(slave)
            assert ready, f"an attach still runs after {ANSWER_S} s"
            said = driver.stdout.readline().strip()
            # Refused means nothing was done; any other error, that a call ran in it and failed.
            assert said.startswith(("moved", "Refusal: ")), f"neither moved nor refused: {said!r}"
            status = proc.read_status(victim.pid)
            assert victim.alive() and status["TracerPid"] == "0"
            assert (status["SigBlk"], status["SigIgn"]) == ("0" * 16, ignored)  # (both survive exec)
            assert proc.fd_target(victim.pid, 0) == (term.slave_path if said == "moved" else before), said
            was = generation(victim.pid)
            wait_for(lambda was=was: generation(victim.pid) != was, what="the victim to exec on")
            outcomes[said] += 1
    finally:
        driver.kill()
        driver.wait()
        driver.stdin.close()
        driver.stdout.close()
    print(dict(outcomes))


@pytest.fixture(scope="session")
def masked_wait(tmp_path_factory) -> str:
    from conftest import build_c

    return build_c(tmp_path_factory, "masked_wait.c")


MASKED_WAIT_S = 1
# What each call returns when its wait ends by itself (sigsuspend always ends with EINTR: SIGALRM).
NATURAL_END = {"ppoll": "0 (ok)", "pselect": "0 (ok)", "sigsuspend": "-1 (Interrupted system call)"}


def signal_held_off(pid: int) -> None:
    """Wait until `pid` is inside its call, the call's mask in force; then send the signal it holds off."""
    in_call = lambda: proc.has_signal(proc.signal_mask(proc.read_status(pid), "SigBlk"),  # noqa: E731
                                      signal.SIGUSR1)
    wait_for(in_call, what="the victim to be inside its call, the call's mask in force")
    os.kill(pid, signal.SIGUSR1)  # pending: the call's mask holds it off until its time is over


def call_ended_as_if_alone(term: Terminal, call: str) -> None:
    """The call waited its whole time, returned what it would have, and only as it returned was SIGUSR1
    handled."""
    said = term.expect("SIGUSR1 handled at", timeout=MASKED_WAIT_S + 3) + term.expect(" ms")
    ended = re.search(r"returned (.*) after (\d+) ms; \s*(\d+)$", said)
    assert ended, said
    result, after_ms, handled_ms = ended.group(1), int(ended.group(2)), int(ended.group(3))
    # The handler runs as the call returns, before the program reads the clock again: handled <= after
    # (the same ms on a fast machine, one or two under emulation).
    assert result == NATURAL_END[call] and MASKED_WAIT_S * 1000 <= handled_ms <= after_ms, said


@pytest.mark.parametrize("fault", [None, "infect"])
@pytest.mark.parametrize("call", sorted(NATURAL_END))
def test_a_signal_held_off_by_a_calls_own_mask_waits_for_the_call_to_end(spawn, masked_wait, monkeypatch,
                                                                          call, fault):
    """SIGUSR1 pending, held off by the call's temporary mask: moved (or failed at infect) in the middle of
    the call, the program sees what it would have without us."""
    victim = spawn.on_pty([masked_wait, call, str(MASKED_WAIT_S)])
    signal_held_off(victim.pid)
    if fault:
        monkeypatch.setenv("REPTYR_TMUX_FAULT", fault)
    term, slave = new_tty(spawn)
    try:
        with pytest.raises(ReptyrError) if fault else contextlib.nullcontext():
            attach(victim.pid, term.slave_path)
    finally:
        os.close(slave)
    call_ended_as_if_alone(victim.term if fault else term, call)


@pytest.mark.parametrize("call", ["pselect", "sigsuspend"])
def test_a_calls_own_mask_is_kept_in_a_session_move(spawn, shell, masked_wait, call):
    from test_session import move

    shell.run(f"{masked_wait} {call} {MASKED_WAIT_S}", ready="ready")
    job = wait_for(lambda: next((s.pid for s in proc.all_stats() if s.ppid == shell.pid), None),
                   what="the job")
    signal_held_off(job)
    term, _ = move(spawn, shell, job)
    call_ended_as_if_alone(term, call)


def fd_limit(pid: int, limit: int) -> None:
    subprocess.run(["prlimit", f"--pid={pid}", f"--nofile={limit}:{limit}"], check=True)


@pytest.mark.parametrize("limit", [20, 101])
def test_a_low_fd_limit_still_moves(spawn, limit):
    """ulimit -n at or under our usual parking place (fd 100): park below the limit instead."""
    victim = spawn.on_pty(ECHO)
    fd_limit(victim.pid, limit)
    term, _ = move(spawn, victim)
    term.write(b"low limit\n")
    term.expect("got: low limit")


def test_no_free_fd_is_one_sentence_and_no_change(spawn):
    victim = spawn.on_pty(ECHO)
    fds = set(proc.open_fds(victim.pid))
    fd_limit(victim.pid, next(n for n in range(1024) if n not in fds))  # every fd it may open is taken
    refused_untouched(spawn, victim, ReptyrError, "no free file descriptor")


@pytest.fixture(scope="session")
def vfork_parent(tmp_path_factory) -> str:
    from conftest import build_c

    return build_c(tmp_path_factory, "vfork_parent.c")


def test_a_parent_blocked_in_vfork_is_refused_as_uninterruptible(spawn, vfork_parent):
    from reptyr_tmux.engine.session import survey_session

    victim = spawn.on_pty([vfork_parent])
    wait_for(lambda: victim.stat().state == "D", what="the parent to wait for its vfork child")
    refused_untouched(spawn, victim, Refusal, "uninterruptible wait .state D. for the child it vforked")
    with pytest.raises(Refusal, match="uninterruptible"):
        survey_session(victim.pid)  # (adopt's session mode)


# Seizes the pid it is given with a SIGTERM to itself pending (held, as the engine holds it while it works).
SEIZE_ASKED_TO_STOP = """
import signal, sys, time
from reptyr_tmux.engine.remote import RemoteProcess
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
signal.raise_signal(signal.SIGTERM)
started = time.monotonic()
try:
    RemoteProcess.infect(int(sys.argv[1]))
except Exception as e:
    print(f"{time.monotonic() - started:.2f} {type(e).__name__}: {e}")
"""


def test_a_target_that_never_stops_is_given_up_soon_once_we_are_asked_to_stop(spawn, vfork_parent):
    """Seized while it cannot stop (here: in vfork, the survey's look skipped): with a SIGTERM to us
    pending, we give up within a second, say why, and once we are gone it is nobody's and unchanged."""
    from reptyr_tmux.engine.remote import ANSWER_WITHIN_S

    victim = spawn.on_pty([vfork_parent])
    wait_for(lambda: victim.stat().state == "D", what="the parent to wait for its vfork child")
    before = untouched(victim.pid)
    said = subprocess.run([sys.executable, "-c", SEIZE_ASKED_TO_STOP, str(victim.pid)], capture_output=True,
                          text=True, timeout=30).stdout
    took, _, error = said.partition(" ")
    assert error.startswith("Refusal: ") and "uninterruptible" in error, said
    assert float(took) < 3 * ANSWER_WITHIN_S, said
    assert proc.read_status(victim.pid)["TracerPid"] == "0" and untouched(victim.pid) == before
    assert victim.stat().state == "D"


# Seizes the pid it is given, waiting at most a second for it to stop; what the wait cost us in CPU.
SEIZE_AND_COUNT_CPU = """
import resource, sys, time
from reptyr_tmux.engine import remote
remote.STOP_WITHIN_S = 1.0
used = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
started, cpu = time.monotonic(), used()
try:
    remote.RemoteProcess.infect(int(sys.argv[1]))
except Exception as e:
    print(f"{time.monotonic() - started:.3f} {used() - cpu:.4f} {type(e).__name__}")
"""


def test_waiting_for_a_stop_sleeps_until_the_kernel_tells_us(spawn, vfork_parent):
    """The engine waits for a tracee's stops on the SIGCHLD the kernel sends a tracer, not by polling:
    a target that never stops (in vfork) costs us next to no CPU for the whole wait."""
    victim = spawn.on_pty([vfork_parent])
    wait_for(lambda: victim.stat().state == "D", what="the parent to wait for its vfork child")
    said = subprocess.run([sys.executable, "-c", SEIZE_AND_COUNT_CPU, str(victim.pid)], capture_output=True,
                          text=True, timeout=30).stdout
    took, cpu, error = said.split()
    assert error == "Refusal" and float(took) >= 1.0, said
    # Measured in a 1.5 s wait: 2 ms; polling every 0.2 ms (as before) took 0.11 s.
    assert float(cpu) < 0.05, f"{cpu} s of CPU in a {took} s wait"
    assert proc.read_status(victim.pid)["TracerPid"] == "0"


def test_an_ignored_sigchld_we_inherit_still_wakes_our_waits():
    """SIGCHLD ignored by whoever started us (SIG_IGN survives exec) is one the kernel never sends, not
    even to a tracer for its tracee's stops: a wait sets the default for its time, so a child's change
    wakes it (here a child's exit, 50 ms in; ignored, the wait would run out its 2 s), and the ignored
    disposition is ours again afterwards."""
    from reptyr_tmux.engine import remote

    inherited = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with remote._child_events_held():
            child = subprocess.Popen(["sleep", "0.05"])
            assert remote._await_child_event(2.0)
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
        child.wait(timeout=5)
    finally:
        signal.signal(signal.SIGCHLD, inherited)
