"""Run an engine call in a process of its own, which the user's kill cannot stop half-way.

While the engine holds a target, what it has changed lives in the target: ptrace's signal mask (which
stays after a tracer dies), SIGHUP ignored, parked fds, a terminal given up. Killed with SIGKILL there,
we could never give them back. So the command a person sees (and may `kill -9`, or run under
`timeout -s KILL`) only waits: the engine runs in a child in a session of its own, out of reach of
signals to our process group. Our SIGINT/SIGTERM/SIGHUP are passed on to it (its transaction answers
them at the next step, undoing everything); our death, if `undo_if_we_die`, reaches it as SIGTERM
(PR_SET_PDEATHSIG), so a move whose front end is gone is undone instead of finished.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
from collections.abc import Callable
from typing import TypeVar

from reptyr_tmux.errors import ReptyrError
from reptyr_tmux.front_end import speak_for

T = TypeVar("T")
PR_SET_PDEATHSIG = 1
PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Apart:
    """The engine's process, started ahead of its work: it loads ptrace's modules while we still look
    at the target and open the pane (two things at once), then does what run() hands it. Leaving the
    `with` block without run() ends it at once: it never held anything. `close`: our fds it must not
    keep open (a pty master whose closing means we are gone)."""

    def __init__(self, undo_if_we_die: bool = False, close: tuple[int, ...] = ()):
        go_readable, self._go = os.pipe()
        self._outcome, outcome_writable = os.pipe()
        parent, grandparent = os.getpid(), os.getppid()
        # Held in the engine for its whole life, from before the fork: it never dies of one (a signal that
        # comes while a finished move's cleanups run would be delivered when they end, killing it with
        # the move done and its outcome unsent). Its transactions take them as pending, and answer them.
        ours = signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
        self.child = os.fork()
        if self.child == 0:
            os.close(self._go)
            os.close(self._outcome)
            speak_for(parent, grandparent)  # "this command" and "the shell that ran it" are still those
            _become_worker(parent, undo_if_we_die, close)
            import reptyr_tmux.engine.attach  # noqa: F401  (the warm-up: the engine and its two moves)
            import reptyr_tmux.engine.remote  # noqa: F401
            import reptyr_tmux.engine.session  # noqa: F401

            job = _read_all(go_readable)
            if not job:  # never asked: nothing to do
                os._exit(0)
            call, args, kwargs = pickle.loads(job)
            _exit_with(outcome_writable, lambda: call(*args, **kwargs))
        signal.pthread_sigmask(signal.SIG_SETMASK, ours)
        os.close(go_readable)
        os.close(outcome_writable)
        self._asked = False

    def __enter__(self) -> Apart:
        return self

    def __exit__(self, *_: object) -> None:
        self._close_go()
        with contextlib.suppress(OSError):
            os.close(self._outcome)
        if not self._asked:  # still loading, perhaps: it has touched nothing, no need to wait for it
            os.kill(self.child, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.child, 0)

    def run(self, call: Callable[..., T], *args: object, **kwargs: object) -> T:
        """call(*args, **kwargs) there (a module-level function: it travels by name)."""
        self._asked = True
        previous = {signum: signal.signal(signum, lambda signum, _frame: _pass_on(self.child, signum))
                    for signum in PASSED_ON}
        try:
            with contextlib.suppress(BrokenPipeError):  # it died: said below
                _write_all(self._go, pickle.dumps((call, args, kwargs)))
            self._close_go()
            data = _read_all(self._outcome)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        ok, value = pickle.loads(data) if data else (False, ReptyrError("the engine's process died"))
        if ok:
            return value
        raise value

    def _close_go(self) -> None:
        if self._go >= 0:
            os.close(self._go)
            self._go = -1


_started_early: Apart | None = None


def start_early(undo_if_we_die: bool = False) -> None:
    """Start the engine's process now, for this process's next engine_process(): ptrace's modules load
    there while a front end waits for a person (a menu) or does its own work (parses its arguments,
    looks at the target, opens the new terminal), so none load after."""
    global _started_early
    if _started_early is None:
        _started_early = Apart(undo_if_we_die)


def engine_process(undo_if_we_die: bool = False, close: tuple[int, ...] = ()) -> Apart:
    """The engine's process started early, or a new one made with these arguments (use it in a `with`
    block). One started early has none of the fds we opened since, so nothing to close."""
    global _started_early
    engine, _started_early = _started_early or Apart(undo_if_we_die, close), None
    return engine


def end_early() -> None:
    """The person chose nothing: the engine's process started early ends, having touched nothing."""
    global _started_early
    if _started_early is not None:
        with _started_early:  # leaving the block without run() ends it
            _started_early = None


def run_detached(call: Callable[[], object]) -> None:
    """call() in a short-lived process that outlives nothing it needs from us: its own session, no
    stdin/stdout/stderr of ours (whoever reads our output sees it end when we do). We return at once.
    It is our grandchild, not our child: a relay that lives for hours (attach -T) never waits for its
    exit, and would keep a zombie all that while."""
    middle = os.fork()
    if middle != 0:
        with contextlib.suppress(ChildProcessError):  # (SIGCHLD ignored: the kernel reaped it)
            os.waitpid(middle, 0)  # it forks and exits at once
        return
    if os.fork() != 0:
        os._exit(0)
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.setsid()
        call()
    finally:
        os._exit(0)


def _become_worker(parent: int, undo_if_we_die: bool, close: tuple[int, ...]) -> None:
    for fd in close:
        os.close(fd)
    for signum in PASSED_ON:  # (held, see Apart: never Python's handlers, whatever a mask restores)
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGTSTP, signal.SIG_IGN)  # ^Z meant for the front end: never stop holding
    os.setsid()
    if undo_if_we_die:
        import ctypes  # here, in the engine's process: the front end does not pay for it

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # it died before that took effect: nobody to work for
            os._exit(0)


def _exit_with(writable: int, call: Callable[[], object]) -> None:
    try:
        try:
            outcome = (True, call())
        except BaseException as e:  # every outcome goes back to the front end
            outcome = (False, e)
        try:
            data = pickle.dumps(outcome)
        except Exception as e:  # an exception that cannot travel: its sentence can
            data = pickle.dumps((False, ReptyrError(str(outcome[1]) or repr(e))))
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        _write_all(writable, data)
    except OSError:
        pass  # the front end is gone: the outcome has nobody to go to
    finally:
        os._exit(0)


def _pass_on(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
