"""The exceptions the engine raises; each message is a sentence a user can act on."""


class ReptyrError(Exception):
    """Something stopped the operation; the target was left as it was unless the message says so."""

    exit_code = 1


class Refusal(ReptyrError):
    """The target (or the request) is not one we can act on; nothing was touched."""

    exit_code = 2

    def __init__(self, message: str, short: str | None = None):
        super().__init__(message)
        self.short = short  # a few words for a menu row, where the whole sentence does not fit

    def __reduce__(self):  # it travels from the engine's process (worker.py) by pickle
        return type(self), (str(self), self.short)


class TargetGone(ReptyrError):
    """The target exited or was killed while we worked on it."""


class RemoteError(ReptyrError):
    """A syscall run inside the target failed."""

    def __init__(self, call: str, errno_value: int):
        import os

        self.call = call
        self.errno = errno_value
        super().__init__(f"{call} failed inside the target: {os.strerror(errno_value)}")

    def __reduce__(self):  # it travels from the engine's process (worker.py) by pickle
        return type(self), (self.call, self.errno)


class InjectedFault(ReptyrError):
    """A failure forced by the test-only fault hook (REPTYR_TMUX_FAULT)."""


class Interrupted(ReptyrError):
    """We received SIGINT/SIGTERM/SIGHUP while holding the target; it was given back first."""

    def __init__(self, signum: int):
        import signal

        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}; the target was left as it was")

    def __reduce__(self):
        return type(self), (self.signum,)

def internal_error(e: Exception) -> str:
    """The one line for a bug of ours (an exception that is not a ReptyrError)."""
    return (f"internal error ({type(e).__name__}: {e}); any process we held was given back. "
            "Please report it; REPTYR_TMUX_DEBUG=1 shows the traceback")
