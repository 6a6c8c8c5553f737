"""Steps with a way back: the shape every change to a target takes.

Each step is done, then its undo is pushed. Leaving the `with` block by an exception runs the undos of
every completed step, newest first; leaving it normally runs only the cleanups (undos marked `always`).
While the block runs, SIGINT/SIGTERM/SIGHUP to *us* are held and checked between steps, so a user's ^C
aborts at a step boundary and the target is given back, instead of leaving it half-moved. Job-control
stops (^Z, SIGTTOU...) are held until the block ends: stopped there, we would keep the target stopped
with us. For the same reason nothing is written while the block runs: -V's lines wait in memory and
are written once it is over (a stderr nobody reads, or a terminal on ^S, would block us holding it).

The test-only fault hook: REPTYR_TMUX_FAULT=<step name> makes that step fail right after it is done;
REPTYR_TMUX_FAULT=<step name>:SIGTERM sends us that signal there instead, <step name>:kill=PID
kills another process there (the target, the tmux server) to test its dying at that moment, and
<step name>:kill=command SIGKILLs the command the user sees (our parent when we run in worker.py, else
ourselves) and waits for its death.

A move may have a point of no return (`roll_forward`): from there a failing step (or a fault) no longer
undoes what came before. The remaining steps are still tried, their failures collected in
`forward_errors`, and only the cleanups run at the end; the caller reports what did not happen.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from reptyr_tmux.errors import InjectedFault, Interrupted
from reptyr_tmux.front_end import command_and_parent

T = TypeVar("T")
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # abort the transaction
JOB_STOPS = {signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}  # wait until it is over
FAULT_ENV = "REPTYR_TMUX_FAULT"


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP to us held beyond a Transaction, for what must follow a finished move before
    such a signal may end us (a hangup of the new terminal seen only after the block is passed on)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Transaction:
    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.steps_done: list[str] = []
        self.undo_errors: list[str] = []
        self._undos: list[tuple[str, Callable[[], object], bool]] = []
        self._old_mask: set[int] | None = None
        self._fault = os.environ.get(FAULT_ENV)
        self._t0 = time.monotonic()
        self.forward_errors: list[str] = []
        self._forward = False
        self._held_lines: list[str] | None = None  # -V's lines while the block runs


    def __enter__(self) -> Transaction:
        self._old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS | JOB_STOPS)
        self._held_lines = []
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None
        # A signal during the last step aborts, unless we are past the point of no return: then it
        # waits, blocked, until the cleanups are done.
        interrupted = None if failed or self._forward else self._take_pending_signal()
        try:
            self._unwind(failed or interrupted is not None)
        finally:
            if failed:
                self._take_pending_signal()  # already answered by the rollback
            # A signal that comes during the cleanups is delivered as usual on unblocking.
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old_mask or set())
            self._write_held_lines()
        if interrupted:
            raise Interrupted(interrupted)

    def step(self, name: str, do: Callable[[], T], undo: Callable[[T], object] | None = None,
             always: bool = False) -> T:
        """Do one step; remember how to undo it (on failure, or always if `always`)."""
        if self._forward:
            return self._step_forward(name, do, undo, always)
        self.check_interrupt()
        value = do()
        self.steps_done.append(name)
        self.log(name)
        if undo is not None:
            self._undos.append((name, lambda: undo(value), always))
        self._maybe_fault(name)
        return value

    def roll_forward(self) -> None:
        """The point of no return: drop every undo but the cleanups; later failures are collected."""
        self._undos = [entry for entry in self._undos if entry[2]]
        self._forward = True

    def _step_forward(self, name: str, do: Callable[[], T], undo: Callable[[T], object] | None,
                      always: bool) -> T | None:
        try:
            value = do()
        except Exception as e:  # past the point of no return every step is tried
            self.forward_errors.append(f"{name}: {e}")
            self.log(f"{name} FAILED (rolling forward): {e}")
            return None
        self.steps_done.append(name)
        self.log(name)
        if undo is not None and always:
            self._undos.append((name, lambda: undo(value), always))
        try:
            self._maybe_fault(name)
        except InjectedFault as e:
            self.forward_errors.append(str(e))
        return value

    def _maybe_fault(self, name: str) -> None:
        """After step `name`: REPTYR_TMUX_FAULT=name fails it; name:SIGTERM (any signal) signals us;
        name:kill=PID kills process PID (the target, a tmux server...) as if it died right then."""
        step, _, action = (self._fault or "").partition(":")
        if step != name:
            return
        if action == "kill=command":
            command, _ = command_and_parent()
            os.kill(command, signal.SIGKILL)
            while os.getppid() == command:  # until it is dead (its death signal, if any, sent)
                time.sleep(0.001)
        elif action.startswith("kill="):
            _kill_and_wait(int(action[5:]))
        elif action:
            os.kill(os.getpid(), signal.Signals[action])
        else:
            raise InjectedFault(f"fault injected after step '{name}'")

    def check_interrupt(self) -> None:
        signum = self._take_pending_signal()
        if signum:
            raise Interrupted(signum)

    def log(self, message: str) -> None:
        if not self.verbose:
            return
        line = f"[{(time.monotonic() - self._t0) * 1000:7.1f} ms] {message}"
        if self._held_lines is not None:
            self._held_lines.append(line)
        else:
            self._write([line])

    def _write_held_lines(self) -> None:
        lines, self._held_lines = self._held_lines or [], None
        self._write(lines)

    @staticmethod
    def _write(lines: list[str]) -> None:
        if lines:
            try:
                print("\n".join(lines), file=sys.stderr, flush=True)
            except OSError:
                pass  # nobody to tell: the move itself is done or undone either way

    def _unwind(self, failed: bool) -> None:
        while self._undos:
            name, undo, always = self._undos.pop()
            if not (failed or always):
                continue
            try:
                undo()
                self.log(f"undo {name}" if failed else f"cleanup {name}")
            except Exception as e:  # keep undoing the rest: one failure must not strand the others
                self.undo_errors.append(f"{name}: {e}")
                self.log(f"undo {name} FAILED: {e}")

    @staticmethod
    def _take_pending_signal() -> int | None:
        pending = signal.sigpending() & HELD_SIGNALS
        if not pending:
            return None
        signum = signal.sigtimedwait(pending, 0)
        return signum.si_signo if signum else None


def _kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL `pid` and wait until it has exited: kill() returns while the process still has its exit
    ahead (closing its fds, a tmux server's pty masters, takes it 0.4-1.6 ms here, longer under load),
    and a test of "it died at this step" must not race that."""
    pidfd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        select.select([pidfd], [], [], timeout)  # readable once it has exited, its files closed
    finally:
        os.close(pidfd)
