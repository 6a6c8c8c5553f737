"""The steal-mode relay as a native x86_64 or aarch64 ELF: ``relay_argv(HOLDER_PID, FD)``.

Why: the relay is the first process of a steal-mode pane and lives as long as the stolen session,
copying every byte the session prints. The Python relay (``python -m reptyr_tmux.native.relay``, see
relay.py and ptyproxy.py) costs ~7 ms CPU per MiB relayed and keeps ~13 MB resident; the C reptyr's
proxy costs ~5.5 ms/MiB and 1.8 MB. This ELF (no libc, one PT_LOAD segment, wrapped and cached like
the holder ELF by holder.py) does the same job in a few pages of memory and with one read and one
write system call per chunk. Its code is one assembler source per machine beside this file,
relay-x86_64.S and relay-aarch64.S (ppoll for poll there); this module carries their bytes as
assembled (RELAY_X86_64_CODE, RELAY_AARCH64_CODE; tests/test_holder.py checks that they agree).

What it does, as ``relay PID FD`` (exit 2: bad arguments; 1: cannot take the fd; 0: session over):

1. parses PID and FD (decimal);
2. takes its own copy of PID's fd FD (the pty master) with pidfd_open + pidfd_getfd;
3. renames itself "reptyr-relay" (relay.RELAY_NAME: the ready sign adopt waits for);
4. puts fd 0 (the pane's pty) in raw mode, as cfmakeraw does, keeping the old settings;
5. blocks SIGWINCH and reads it from a signalfd; copies the pane's window size to the master;
6. sends SIGWINCH to the session's foreground job, so full-screen programs repaint;
7. relays with poll(): master -> fd 1, fd 0 -> master, and the window size again on each SIGWINCH,
   until the master reports EIO/hang-up (every slave fd closed: the session is gone) or fd 0 ends;
8. restores fd 0's terminal settings and exits 0.

Unlike the Python relay it does not check the holder's start time: the caller checks it again once
the relay is ready (as with the holder ELF). Writes that would block on a non-blocking master (the
stolen master shares its file description with the process it came from) wait in poll(POLLOUT).

Fallback: ``relay_argv`` returns None on other architectures (than x86_64 and aarch64), when
REPTYR_TMUX_RELAY_PYTHON=1 is set, or when no private cache directory lets us write and exec the ELF;
callers then run the Python relay
(``python -m reptyr_tmux.native.relay HOLDER_PID STARTTIME FD``), which behaves the same.
"""

from __future__ import annotations

from reptyr_tmux.native.holder import cached_elf, native_allowed, native_elf

FORCE_PYTHON_ENV = "REPTYR_TMUX_RELAY_PYTHON"
ELF_PREFIX = "relay"


# The relay: relay-x86_64.S and relay-aarch64.S (beside this file) as assembled (test_holder.py checks
# that they agree).
RELAY_X86_64_CODE = bytes.fromhex(
    "488b0c244883f9030f8566020000488b742410e86b02000085d20f84540200004989d4488b742418e8560200004989d5"
    "4489e731f6b8b20100000f0585c00f88350200004989c789c74489ee31d2b8b60100000f054989c44489ffb803000000"
    "0f054585e40f880e020000bf0f000000488d35a9020000b89d0000000f054881ec800001004889e34c8dbb8000000031"
    "ffbe01540000488d5330b8100000000f054989c685c0754c488d7330488d7b54b924000000f3a481635414faffff8163"
    "58feffffff81635ccffeffff814b5c30000000816360b47fffffc6436b01c6436a0031ffbe02540000488d5354b81000"
    "00000f0548c743280000000831ff488d732831d241ba08000000b80e0000000f05bfffffffff488d7328ba0800000041"
    "ba00000800b8210100000f054989c5e8c20100004489e7be0f540000488d5318b8100000000f0585c075158b7b1885ff"
    "7e0ef7dfbe1c000000b83e0000000f05c7430000000000c743040100000044896308c7430c0100000044896b10c74314"
    "010000004889dfbe03000000baffffffffb8070000000f054883f8fc74e64885c00f88b20000000fb7430ea801750aa8"
    "380f85a2000000eb3c4489e74c89feba0000010031c00f054883f8fc0f84b2ffffff4883f8f50f84a8ffffff4885c00f"
    "8e74000000bf010000004c89fe4889c2e8b500000066837b0600743931ff4c89feba0000010031c00f054883f8fc0f84"
    "70ffffff4883f8f50f8466ffffff4885c00f8e320000004489e74c89fe4889c2e87500000066837b16000f8444ffffff"
    "4489ef4c89feba8000000031c00f05e8a2000000e92bffffff4d85f6751231ffbe02540000488d5330b8100000000f05"
    "31ffeb086a025feb036a015fb8e70000000f0531d231c0803e0074e8ac84c074182c303c0977dd486bd20a4801c24881"
    "faffffff7f76e5ebcbc3b8010000000f054883f8fc74f34883f8f574124885c00f8e93ffffff4801c64829c275dcc389"
    "7b78c7437c04000000575652488d7b78be01000000baffffffffb8070000000f055a5e5febb431ffbe13540000488d53"
    "20b8100000000f0585c075134489e7be14540000488d5320b8100000000f05c37265707479722d72656c617900"
)
RELAY_AARCH64_CODE = bytes.fromhex(
    "e00340f91f0c00f1011c0054e10b40f9cf000094a01b00b4f40300aae10f40f9cb000094f50300aae00314aa010080d2"
    "483680d2010000d4c01af8b7f70300aae10315aa020080d2c83680d2010000d4f40300aae00317aa280780d2010000d4"
    "9419f8b7e00180d2a1190010e81480d2010000d4ff4340d1ff0302d1f303009177020291000080d221808ad262c20091"
    "a80380d2010000d4f60300aae00300b5090080d26ac200914b6969b86a5201914b6929b8291100913f9100f141ffff54"
    "6aae4a296cb64b2969bd80524a01290a290080526b01290a092680528c01290a090680528c01092a69099052ad01290a"
    "6aae0a296cb60b292900805269ae01397faa0139000080d241808ad262520191a80380d2010000d40900a1d2691600f9"
    "000080d261a20091020080d2030180d2e81080d2010000d40000809261a20091020180d20301a0d2480980d2010000d4"
    "f50300aa72000094e00314aae1818ad262620091a80380d2010000d4000100b5601a80b91f0000f1ad000054e00300cb"
    "810380d2281080d2010000d4290080527f0200b9690600b9740a00b9690e00b9751200b9691600b9e00313aa610080d2"
    "020080d2030080d2040080d2280980d2010000d41f1000b100ffff54e005f8b7691e4079890000373f091d7261050054"
    "10000014e00314aae10317aa2200a0d2e80780d2010000d41f1000b160fdff541f2c00b120fdff541f0000f1ed030054"
    "e20300aa200080d2e10317aa23000094690e407909020034000080d2e10317aa2200a0d2e80780d2010000d41f1000b1"
    "40fbff541f2c00b100fbff541f0000f1cd010054e20300aae00314aae10317aa12000094692e407909faff34e00315aa"
    "e10317aa021080d2e80780d2010000d427000094c9ffff17d60000b5000080d241808ad262c20091a80380d2010000d4"
    "000080d23c000014e90300aae00309aa080880d2010000d41f1000b180ffff541f2c00b1e00000541f0000f1edfdff54"
    "2100008b420000eba1feff54c0035fd68a008052697a00b96a7e00b9ea0301aaeb0302aa60e20191210080d2020080d2"
    "030080d2040080d2280980d2010000d4e1030aaae2030baae5ffff17000080d261828ad262820091a80380d2010000d4"
    "c00000b5e00314aa81828ad262820091a80380d2010000d4c0035fd6000080d222004039a20100342214403842010034"
    "42c000515f24007108010054430180d20008039be37b40b21f0003ebe9feff5402000014c0035fd6400080d202000014"
    "200080d2c80b80d2010000d47265707479722d72656c617900"
)


def relay_elf(for_machine: str | None = None) -> bytes:
    """The relay as a static ELF64 executable for `for_machine` (None: ours): ``relay PID FD``."""
    return native_elf(for_machine, RELAY_X86_64_CODE, RELAY_AARCH64_CODE)


# --- the cached file ------------------------------------------------------------------------------


def relay_elf_path() -> str | None:
    """The relay ELF as a file tmux can exec, beside the holder's; None on other architectures (than
    x86_64 and aarch64), when REPTYR_TMUX_RELAY_PYTHON=1, or if no usable place exists."""
    if not native_allowed(FORCE_PYTHON_ENV):
        return None
    return cached_elf(ELF_PREFIX, relay_elf())


def relay_argv(holder_pid: int, fd: int) -> list[str] | None:
    """The steal-mode pane command relaying HOLDER_PID's pty master FD with no Python in the pane
    (x86_64, aarch64). None means: use the Python relay (``python -m reptyr_tmux.native.relay HOLDER_PID
    STARTTIME FD``) instead. The ELF does not check the start time, so the caller must re-check the holder's
    start time once the relay is ready (comm RELAY_NAME)."""
    path = relay_elf_path()
    return None if path is None else [path, str(holder_pid), str(fd)]
