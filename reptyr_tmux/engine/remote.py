"""Run syscalls inside another process: our small layer over python-ptrace.

The verbs follow CRIU's compel: `infect` seizes the target and saves its registers, `syscall` makes it
run one call for us, `scratch` lends it a page of memory, `cure` puts its registers back and lets go.

How a call is made: point the instruction pointer at a syscall instruction that already exists in the
target (the one it is blocked in, or one in its vDSO / code), load number and arguments, and step over
it with PTRACE_SYSCALL (entry stop, exit stop). No code in the target is ever written, so threads we do
not hold can keep running the same code safely.

Interrupted calls: a target seized while blocked in read()/nanosleep()/poll() has -ERESTART* in its
return register, and it was stopped inside the kernel's signal handling. The kernel restarts such a
call (or turns it into EINTR for a signal handler) when the task leaves *that kind* of stop. Our
injected calls end in syscall-exit stops, where it would not, so `cure` first walks the target back
into a signal-handling stop (PTRACE_INTERRUPT) and only then restores the saved registers, untouched,
and detaches: the kernel then finishes the interrupted call exactly as it would have without us.
Doing the restart by hand instead (ip -= 2) loses a signal that lands before the call re-enters.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from reptyr_tmux import proc
from reptyr_tmux.engine.arch import Arch, arch_of_elf
from reptyr_tmux.engine.survey import moved_by_another_of_us, refuse_seccomp
from reptyr_tmux.errors import Refusal, RemoteError, ReptyrError, TargetGone


def _give_python_ptrace_our_libc() -> None:
    """python-ptrace locates libc with ctypes.util.find_library, which runs ldconfig: ~9 ms of every
    adoption. The C library is already loaded in us; hand it over before it looks."""
    if "ptrace.ctypes_libc" in sys.modules:
        return
    module = types.ModuleType("ptrace.ctypes_libc")
    module.LIBC_FILENAME = "libc.so.6"
    module.libc = ctypes.CDLL("libc.so.6", use_errno=True)
    sys.modules["ptrace.ctypes_libc"] = module


_give_python_ptrace_our_libc()
from ptrace.binding import func as pt  # noqa: E402

PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_EVENT_STOP = 128
WALL = 0x40000000
SYSCALL_STOP = signal.SIGTRAP | 0x80
PTRACE_GETSIGMASK = 0x420A
PTRACE_SETSIGMASK = 0x420B
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET, NT_PRSTATUS = 0x4204, 1
PTRACE_SETREGSET = 0x4205
NT_ARM_SYSTEM_CALL = 0x404  # aarch64: the number of the syscall in progress, outside the registers
# Only while we clone our dummy do we follow clones: following the target's own forks would stop
# its children (and deadlock a vfork) whenever it happens to fork while we hold it.
OPTIONS = pt.PTRACE_O_TRACESYSGOOD
OPTIONS_FOR_DUMMY = OPTIONS | pt.PTRACE_O_TRACECLONE
ALL_SIGNALS = (1 << 64) - 1
STOP_WITHIN_S = 5.0  # the longest we wait for any one stop of a process we hold
ANSWER_WITHIN_S = 0.5  # ...or, once a SIGINT/SIGTERM/SIGHUP to us is pending, this long
ASKED_TO_STOP = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # (held pending by transaction.py)
# Signals the kernel forces on a fault even when they are blocked: in a syscall we made, they mean
# the call could not be made that way (never something to hand on to the program afterwards).
FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS}
PAGE = 4096
# -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ERESTART_RESTARTBLOCK: the kernel restarts the call
# on the way out when no handler runs (for the last, through restart_syscall).
RESTARTED_CALLS = {512, 513, 514, 516}
MINUS_ONE_64 = (1 << 64) - 1  # "no syscall in progress", so the kernel's restart logic stays out


def _copy(regs):
    return type(regs).from_buffer_copy(regs)


class RemoteProcess:
    """One thread of a process, held with ptrace, that runs syscalls on our behalf."""

    def __init__(self, pid: int, arch: Arch, parent: RemoteProcess | None = None):
        self.pid = pid
        self.arch = arch
        self.saved = pt.ptrace_getregs(pid)
        self.injected = False
        self.deferred_signals: list[int] = []
        self.saved_mask: int | None = None
        self.call_mask: int | None = None  # the mask in force when seized (a call's temporary one)
        # aarch64: the kernel's restart decision taken (see _let_the_kernel_decide_the_restart); cure then
        # lets the call re-enter before any signal can run a handler, which would restart it whole.
        self.settled = False
        self.clones: list[int] = []  # pids (ours) of children it cloned while we followed clones
        self._mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        self.insn_addr = parent.insn_addr if parent else self._find_syscall_insn()

    # -- infect / cure ---------------------------------------------------------------------------
    @classmethod
    def infect(cls, pid: int) -> RemoteProcess:
        """Seize the target without sending it a signal, stop it, save its registers, and block
        its signals (ptrace's own mask, given back by cure): a signal that arrives meanwhile stays
        pending, with all its information, and is delivered as usual after we let go.

        Its architecture is read only once it is stopped: until then it may exec a program of another
        one (a 64-bit launcher exec'ing a 32-bit program), and a syscall made the other
        architecture's way faults (SIGILL) or runs some other call."""
        try:
            pt.ptrace(PTRACE_SEIZE, pid, 0, OPTIONS)
        except pt.PtraceError as e:
            raise _seize_error(pid, e.errno) from None
        try:
            pt.ptrace(PTRACE_INTERRUPT, pid)
            try:
                _run_to_interrupt_stop(pid, deliver=True)
            except DidNotStop as e:
                raise _not_stopping(pid) or e from None
            # Stopped, it can no longer exec into seccomp: asked now, before it runs a thing for us (on
            # aarch64 the step below already enters a syscall, which strict mode kills it for).
            status = proc.read_status(pid)
            refuse_seccomp(proc.read_stat(pid), status)
            target = cls(pid, arch_of_stopped(pid))
            target._block_signals(status)
            if target.arch.rewinds_before_stop:
                target._let_the_kernel_decide_the_restart()
            return target
        except BaseException:
            _detach_quietly(pid)
            raise

    @classmethod
    def adopt_child(cls, pid: int, parent: RemoteProcess) -> RemoteProcess:
        """Take over a child our traced target just cloned (it starts stopped, already traced)."""
        _wait_stopped(pid)
        return cls(pid, parent.arch, parent)

    def take_clone(self) -> int:
        """The pid, in our namespace, of the child its last clone made (from ptrace's clone event;
        clone's own result is the pid in the target's namespace)."""
        if not self.clones:
            raise ReptyrError(f"process {self.pid} cloned no child that ptrace reported")
        return self.clones.pop()

    def follow_clones(self, on: bool) -> None:
        pt.ptrace_setoptions(self.pid, OPTIONS_FOR_DUMMY if on else OPTIONS)

    def cure(self) -> None:
        """Give registers and signal mask back, exactly as saved, and detach."""
        try:
            if self.injected:
                self._return_to_signal_stop()
        finally:
            try:
                pt.ptrace_setregs(self.pid, self.saved)
                if self.settled or (self.call_mask != self.saved_mask and self._restarts_its_call()):
                    self._reenter_its_call()
                self._set_sigmask(self.saved_mask)
                pt.ptrace_detach(self.pid, 0)
            except pt.PtraceError as e:
                if e.errno != 3:  # ESRCH: it died under us, nothing left to give back
                    raise
                with suppress(ChildProcessError):  # collect its death so its parent can reap it
                    os.waitpid(self.pid, WALL | os.WNOHANG)
            finally:
                os.close(self._mem)
        for signum in dict.fromkeys(self.deferred_signals):
            with suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def _let_the_kernel_decide_the_restart(self) -> None:
        """aarch64: stopped at the `svc` of an interrupted call, the target has not been told yet whether
        it re-enters that call or restart_syscall (which goes on with what is left of a relative
        nanosleep or a poll); the kernel decides as the target leaves the stop and our injected calls
        would make it forget. So let it decide: step to the next syscall entry, keep the number found
        there for cure, and cancel that call. The target then sits where the kernel would have put it,
        minus one instruction, with nothing run (its signals stay blocked meanwhile).
        Not inside a call with a temporary mask (ppoll, sigsuspend): leaving the stop puts the program's
        own mask back, and a signal it lets through would run a handler first. Those re-enter as they
        were (their restart is the call itself; ppoll wrote the time left into its timeout)."""
        ip = getattr(self.saved, self.arch.ip_reg)
        if self.insn_addr != ip or self.call_mask != self.saved_mask:
            return  # not at a syscall instruction (no interrupted call waits there), or a temporary mask
        try:
            self._run_to_syscall_stop("the interrupted call, as the kernel restarts it")  # entry
            chosen = getattr(pt.ptrace_getregs(self.pid), self.arch.nr_reg)
            _cancel_syscall_aarch64(self.pid)
            self._run_to_syscall_stop("the interrupted call, cancelled")  # exit, at once
        except BaseException:
            with suppress(pt.PtraceError):  # back at its svc, as found: it re-enters the call from the start
                pt.ptrace_setregs(self.pid, self.saved)
                self._set_sigmask(self.saved_mask)
            raise
        setattr(self.saved, self.arch.nr_reg, chosen)
        self.settled = True

    def _block_signals(self, status: dict[str, str]) -> None:
        """PTRACE_GETSIGMASK reports the program's own mask; inside ppoll/pselect/epoll_pwait/sigsuspend
        the one in force (SigBlk) is the call's temporary one, and the kernel keeps the program's aside
        to put back when the call ends. Blocking everything drops that arrangement: cure rebuilds it.
        `status`: /proc/PID/status, read since it stopped."""
        self.call_mask = proc.signal_mask(status, "SigBlk")
        mask = ctypes.c_uint64()
        pt.ptrace(PTRACE_GETSIGMASK, self.pid, 8, ctypes.addressof(mask))
        self.saved_mask = mask.value
        self._set_sigmask(ALL_SIGNALS)

    def _restarts_its_call(self) -> bool:
        """Seized in a call the kernel restarts when it is let go (-ERESTART*: ppoll, sigsuspend...)."""
        regs, arch = self.saved, self.arch
        if arch.rewinds_before_stop:  # wound back already: at its syscall instruction, x0 its first argument
            return getattr(regs, arch.ip_reg) == self.insn_addr
        return (arch.orig_nr_reg is not None and arch.signed(getattr(regs, arch.orig_nr_reg)) >= 0
                and -arch.signed(getattr(regs, arch.ret_reg)) in RESTARTED_CALLS)

    def _reenter_its_call(self) -> None:
        """Let the kernel restart the call while every signal is still blocked, and stop it as it enters
        the call again (the very next instruction): the program's own mask goes back *there*, so the
        call itself sets its temporary mask again over it, saving the program's to put back when it
        returns. A signal only that temporary mask held off waits for the call's end, as it would have;
        put back earlier, it would be delivered at once and the call would return EINTR. (ppoll and
        pselect wrote the time left into the program's timeout, so the call waits only the rest.)"""
        self._run_to_syscall_stop("its own, restarted")

    def _set_sigmask(self, value: int | None) -> None:
        if value is not None:
            mask = ctypes.c_uint64(value)
            pt.ptrace(PTRACE_SETSIGMASK, self.pid, 8, ctypes.addressof(mask))

    def kill(self) -> None:
        """For our own short-lived dummy child only: end it and collect its ptrace exit report."""
        os.close(self._mem)
        os.kill(self.pid, signal.SIGKILL)
        with suppress(TargetGone):
            while True:
                _wait_stopped(self.pid)  # (stops a SIGKILLed process may still report on its way out)

    def _return_to_signal_stop(self) -> None:
        """Park the target in a stop inside the kernel's signal handling (PTRACE_EVENT_STOP).

        Registers restored *there* are seen by the kernel's own restart logic on the way out, so an
        interrupted read()/nanosleep() restarts, or returns EINTR to a handler, exactly as if we had
        never been there. From the syscall-exit stop our last call left it in, it would not.
        """
        pt.ptrace(PTRACE_INTERRUPT, self.pid)
        pt.ptrace_cont(self.pid, 0)
        _run_to_interrupt_stop(self.pid, deliver=False, note=self._note_stop)

    # -- syscall ---------------------------------------------------------------------------------
    def syscall(self, name: str, *args: int) -> int:
        """Run one syscall in the target; return its result, raising RemoteError on -errno."""
        result = self.raw_syscall(name, *args)
        if -4096 < result < 0:
            raise RemoteError(name, -result)
        return result & ((1 << (8 * self.arch.word)) - 1)  # addresses above 2 GiB on i386 stay positive

    def raw_syscall(self, name: str, *args: int) -> int:
        try:
            return self._raw_syscall(name, *args)
        except pt.PtraceError as e:
            if e.errno == 3:  # ESRCH: it was killed (only SIGKILL can end a stopped tracee)
                raise TargetGone(f"process {self.pid} exited while we were working on it") from None
            raise RemoteError(name, e.errno or 5) from None

    def _raw_syscall(self, name: str, *args: int) -> int:
        arch = self.arch
        mask = (1 << (8 * arch.word)) - 1
        regs = _copy(self.saved)
        setattr(regs, arch.ip_reg, self.insn_addr)
        setattr(regs, arch.nr_reg, arch.nr(name))
        for register, value in zip(arch.arg_regs, args):
            setattr(regs, register, value & mask)
        if arch.orig_nr_reg:
            setattr(regs, arch.orig_nr_reg, MINUS_ONE_64)
        self.injected = True
        pt.ptrace_setregs(self.pid, regs)
        self._run_to_syscall_stop(name)  # entry
        self._run_to_syscall_stop(name)  # exit
        return arch.signed(getattr(pt.ptrace_getregs(self.pid), arch.ret_reg))

    def _run_to_syscall_stop(self, name: str) -> None:
        deadline = time.monotonic() + STOP_WITHIN_S
        while True:
            pt.ptrace_syscall(self.pid, 0)
            status = _wait_stopped(self.pid, deadline)
            if os.WSTOPSIG(status) in FAULTS and status >> 16 == 0:
                raise _fault(self.pid, name, os.WSTOPSIG(status))
            if self._note_stop(status):
                return

    def _note_stop(self, status: int) -> bool:
        """Record what a stop tells us; True if it is a syscall stop."""
        stopsig, event = os.WSTOPSIG(status), status >> 16
        if stopsig == SYSCALL_STOP:
            return True
        if event == pt.PTRACE_EVENT_CLONE:
            self.clones.append(_event_message(self.pid))
            return False
        if event == 0 and not self._ignores(stopsig):
            # Only a signal that cannot be blocked gets here (all others wait, pending): keep it for
            # after the detach.
            self.deferred_signals.append(stopsig)
        # Group stops and PTRACE_EVENT_STOPs need nothing: we carry on.
        return False

    def _ignores(self, signum: int) -> bool:
        return proc.has_signal(proc.signal_mask(proc.read_status(self.pid), "SigIgn"), signum)

    # -- memory ----------------------------------------------------------------------------------
    def read(self, address: int, size: int) -> bytes:
        return os.pread(self._mem, size, address)

    def write(self, address: int, data: bytes) -> None:
        if os.pwrite(self._mem, data, address) != len(data):
            raise RemoteError("write to target memory", 5)

    # -- signal dispositions (the kernel's struct sigaction: handler, flags, restorer, mask) --------
    def ignore_signal(self, signum: int, at: int) -> bytes:
        """SIG_IGN for `signum`; returns the old action, in the kernel's layout, to give back as is.
        Uses 128 bytes of target memory at `at`."""
        self.write(at, (1).to_bytes(self.arch.word, "little") + bytes(3 * self.arch.word + 8))
        self.syscall("rt_sigaction", signum, at, at + 64, 8)
        return self.read(at + 64, 3 * self.arch.word + 8)

    def restore_signal(self, signum: int, old: bytes, at: int) -> None:
        """Put `old` back. Ignoring first drops an instance that waited, blocked, meanwhile (POSIX:
        setting SIG_IGN discards pending ones), so a hangup we caused never reaches the program."""
        self.ignore_signal(signum, at)
        self.write(at + 64, old)
        self.syscall("rt_sigaction", signum, at + 64, 0, 8)

    def discard_pending(self, signum: int, at: int) -> None:
        """Drop a pending `signum` (one we caused) and keep the program's own disposition."""
        self.restore_signal(signum, self.ignore_signal(signum, at), at)

    def map_page(self) -> int:
        """A private read-write page in the target; give it back with unmap_page."""
        prot_rw, map_private_anonymous = 0x3, 0x22
        return self.syscall("mmap", 0, PAGE, prot_rw, map_private_anonymous, -1, 0)

    def unmap_page(self, address: int) -> None:
        self.syscall("munmap", address, PAGE)

    @contextmanager
    def scratch(self) -> Iterator[int]:
        """A private page in the target for the duration of a `with`."""
        address = self.map_page()
        try:
            yield address
        finally:
            self.unmap_page(address)

    def _find_syscall_insn(self) -> int:
        insn = self.arch.syscall_insn
        ip = getattr(self.saved, self.arch.ip_reg)
        try:
            if self.arch.rewinds_before_stop and self.read(ip, len(insn)) == insn:
                return ip
            if self.read(ip - len(insn), len(insn)) == insn:
                return ip - len(insn)
        except OSError:
            pass
        regions = sorted(proc.maps(self.pid), key=lambda m: m[3] != "[vdso]")
        for start, end, perms, _name in regions:
            if "x" not in perms or end - start > 64 << 20:
                continue
            try:
                code = self.read(start, end - start)
            except OSError:
                continue
            offset = code.find(insn)
            while offset >= 0 and offset % len(insn) and len(insn) == 4:  # aarch64: aligned only
                offset = code.find(insn, offset + 1)
            if offset >= 0:
                return start + offset
        raise RemoteError("finding a syscall instruction", 8)


def arch_of_stopped(pid: int) -> Arch:
    """The architecture the stopped `pid` runs now: its executable names the machine (read now, when it
    can no longer exec), and the kernel's own view of its registers tells 32-bit code from 64-bit (a
    32-bit task gets a smaller register set): the two must agree, or no syscall can be made safely."""
    try:
        arch = arch_of_elf(proc.exe_header(pid))
    except FileNotFoundError:
        raise TargetGone(f"process {pid} exited before we could attach to it") from None
    except PermissionError:
        raise Refusal(f"process {pid}'s program cannot be read, so its architecture is unknown; "
                      "run this as root") from None
    if arch is None:
        raise Refusal(f"process {pid} runs a program of an architecture this tool does not know")
    if _register_word(pid) != arch.word:
        raise Refusal(f"process {pid} runs {8 * _register_word(pid)}-bit code although its program is "
                      f"{arch.name} (it switched modes itself, as Wine does); it cannot be moved safely")
    return arch


def _register_word(pid: int) -> int:
    """Bytes in a register of the stopped `pid`, as the kernel sees it now: a compat (32-bit) task's
    NT_PRSTATUS register set is smaller than a native one's."""
    native = pt.ptrace_registers_t()
    iov = pt.iovec_struct(ctypes.addressof(native), ctypes.sizeof(native))
    pt.ptrace(PTRACE_GETREGSET, pid, NT_PRSTATUS, ctypes.addressof(iov))
    return ctypes.sizeof(ctypes.c_void_p) if iov.len == ctypes.sizeof(native) else 4


def set_disposition(pid: int, signum: int, action: bytes | None) -> bytes:
    """Seize `pid` for a moment to set its action for `signum` (SIG_IGN when `action` is None, else an
    action as ignore_signal returned it); return the action it had."""
    target = RemoteProcess.infect(pid)
    try:
        with target.scratch() as page:
            old = target.ignore_signal(signum, page)
            if action is not None:
                target.restore_signal(signum, action, page)
            return old
    finally:
        target.cure()


def hold_other_threads(pid: int) -> list[int]:
    """Seize and stop every other thread of `pid` (no signal sent). A thread blocked reading the old
    terminal then restarts its read when let go, and so reads the new one; meanwhile none runs."""
    held: list[int] = []
    try:
        while True:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid and int(t) not in held]
            if not tids:
                return held
            for tid in tids:
                try:
                    pt.ptrace(PTRACE_SEIZE, tid, 0, OPTIONS)
                except pt.PtraceError:
                    continue  # it just exited
                held.append(tid)
                pt.ptrace(PTRACE_INTERRUPT, tid)
                _run_to_interrupt_stop(tid, deliver=True)
    except BaseException:
        release_threads(held)
        raise


def release_threads(tids: list[int]) -> None:
    for tid in tids:
        _detach_quietly(tid)


def _wait_stopped(pid: int, deadline: float | None = None) -> int:
    """The next ptrace stop of `pid`. Never a hang while we hold it: after STOP_WITHIN_S (or `deadline`),
    or ANSWER_WITHIN_S once a signal to us asks us to stop, it is halted where it is (so the undos
    find it stopped) and an error is raised."""
    started = time.monotonic()
    deadline = deadline or started + STOP_WITHIN_S
    with _child_events_held():
        while (status := _collect(pid)) is None:
            now = time.monotonic()
            if now > deadline or (now > started + ANSWER_WITHIN_S and _asked_to_stop()):
                _halt(pid)
                raise DidNotStop(f"process {pid} did not stop for us within {now - started:.1f} s (it may "
                                 "be blocked in the kernel)")
            _await_child_event(min(deadline, now + ANSWER_WITHIN_S / 5) - now)
    if os.WIFEXITED(status) or os.WIFSIGNALED(status):
        raise TargetGone(f"process {pid} exited while we were working on it")
    return status


def _collect(pid: int) -> int | None:
    """The status of the stop (or death) of `pid` the kernel has for us now, if any, as waitpid gives it."""
    waited, status = os.waitpid(pid, WALL | os.WNOHANG)
    return status if waited else None


@contextmanager
def _child_events_held() -> Iterator[None]:
    """The kernel tells a tracer of each stop of its tracees with a SIGCHLD (ignored by default, so
    lost): held blocked, it stays pending for _await_child_event to take. Only around a wait, so no
    program we start inherits it blocked. An ignored SIGCHLD (SIG_IGN, inherited through exec) the kernel
    would not send at all: it is set to the default for the wait."""
    ignored = signal.getsignal(signal.SIGCHLD) == signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if ignored:
            signal.signal(signal.SIGCHLD, signal.SIG_IGN)


def _await_child_event(timeout: float) -> bool:
    """Sleep until a child of ours changes state (a SIGCHLD: True), or `timeout` seconds: the bound on
    how late we see a deadline, or a signal to us, pass."""
    return signal.sigtimedwait({signal.SIGCHLD}, max(timeout, 0.0)) is not None


class DidNotStop(ReptyrError):
    """A process we hold did not reach the stop we waited for, within the bound."""


def _not_stopping(pid: int) -> Refusal | None:
    """Why a process we just seized does not stop, when the kernel says: an uninterruptible wait (a parent
    that vforked, a hung disk or NFS call). Nothing was changed in it; once we exit it is let go."""
    try:
        if proc.read_stat(pid).state != "D":
            return None
    except OSError:
        return None
    return Refusal(f"process {pid} is in an uninterruptible wait in the kernel (state D, e.g. a parent "
                   "waiting for its vfork child, or a hung disk) and did not stop for us; nothing was "
                   "changed: try again once it is out of it", short="uninterruptible")


def _fault(pid: int, call: str, signum: int) -> ReptyrError:
    name = signal.Signals(signum).name
    return ReptyrError(f"process {pid} faulted ({name}) in a syscall we made it run ({call}); it was given "
                       f"back, but its own {name} handler may now be the default one: please report this")


def _asked_to_stop() -> bool:
    return bool(signal.sigpending() & ASKED_TO_STOP)


def _halt(pid: int) -> None:
    """Stop a tracee that runs when it should not (a call that does not return) and collect the stop,
    within a bound: the undos that follow need it stopped."""
    with suppress(pt.PtraceError):
        pt.ptrace(PTRACE_INTERRUPT, pid)
    deadline = time.monotonic() + ANSWER_WITHIN_S
    with _child_events_held(), suppress(ChildProcessError):
        while _collect(pid) is None and (left := deadline - time.monotonic()) > 0:
            _await_child_event(left)


def _run_to_interrupt_stop(pid: int, deliver: bool, note=None) -> None:
    """Wait for our PTRACE_INTERRUPT's stop. Stops that come first are carried on from: a signal
    is delivered as it would have been (`deliver`) or handed to `note`."""
    deadline = time.monotonic() + STOP_WITHIN_S
    while True:
        status = _wait_stopped(pid, deadline)
        if status >> 16 == PTRACE_EVENT_STOP:
            return
        signum = os.WSTOPSIG(status) if status >> 16 == 0 else 0
        if signum and not deliver and note:
            note(status)
            signum = 0
        pt.ptrace_cont(pid, signum)


def _cancel_syscall_aarch64(pid: int) -> None:
    """At a syscall-entry stop: the call does not run (number -1), the kernel goes to its exit stop."""
    number = ctypes.c_int(-1)
    iovec = (ctypes.c_size_t * 2)(ctypes.addressof(number), ctypes.sizeof(number))
    pt.ptrace(PTRACE_SETREGSET, pid, NT_ARM_SYSTEM_CALL, ctypes.addressof(iovec))


def _event_message(pid: int) -> int:
    """PTRACE_GETEVENTMSG: an unsigned long (python-ptrace's own reads it into a 4-byte pid_t)."""
    message = ctypes.c_ulong()
    pt.ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(message))
    return message.value


def _detach_quietly(pid: int) -> None:
    with suppress(pt.PtraceError):
        pt.ptrace_detach(pid, 0)


def _seize_error(pid: int, errno_value: int | None) -> Refusal:
    if errno_value == 1 and (busy := moved_by_another_of_us(pid)):  # EPERM: in another reptyr-tmux's hands
        return busy
    if errno_value == 1:  # EPERM
        hint = ""
        try:
            with open("/proc/sys/kernel/yama/ptrace_scope") as f:
                scope = f.read().strip()
        except OSError:
            scope = ""
        if scope and scope != "0":
            hint = (f" Yama's ptrace_scope is {scope}: run as root, or set it to 0 with"
                    " 'sysctl kernel.yama.ptrace_scope=0'.")
        return Refusal(f"not allowed to trace process {pid} (it may belong to another user, be setuid,"
                       f" or be traced already).{hint}")
    if errno_value == 3:
        return Refusal(f"process {pid} exited before we could attach to it")
    return Refusal(f"could not attach to process {pid}: {os.strerror(errno_value or 0)}")

