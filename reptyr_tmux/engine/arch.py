"""Everything that differs between target architectures, in one table.

A target's architecture is read from its executable's ELF header, so a 32-bit (i386) program is driven
with i386 syscall numbers and `int $0x80` even though we (and the kernel) are x86_64. Register names are
those of the *tracer's* view (python-ptrace's user_regs_struct): an i386 target seen from an x86_64
tracer still shows rax, rbx, ... with the 32-bit values in the low halves.
"""

from __future__ import annotations

from typing import NamedTuple

# Calls the engine makes, named the same on every architecture ("mmap" is mmap2 on i386; the
# engine only maps with offset 0, where the two agree).
SYSCALL_NAMES = (
    "close", "mmap", "munmap", "rt_sigaction", "ioctl", "clone", "wait4", "fcntl",
    "setpgid", "setsid", "openat", "dup3", "socket", "connect", "sendmsg",
)


class Arch(NamedTuple):
    name: str
    elf_class: int  # 1 = 32-bit, 2 = 64-bit
    elf_machine: int
    word: int  # bytes in a pointer / long
    syscall_insn: bytes  # the instruction that enters the kernel
    nr_reg: str
    arg_regs: tuple[str, ...]
    ret_reg: str
    ip_reg: str
    orig_nr_reg: str | None  # the kernel's "syscall in progress" number; set to -1 while we inject
    numbers: dict[str, int]
    tested: bool = True
    # The kernel winds an interrupted call back to its syscall instruction *before* the tracer's stop and
    # decides only on the way out whether it restarts as itself or as restart_syscall (what is left of a
    # relative nanosleep, a poll): the saved registers do not say which (aarch64).
    rewinds_before_stop: bool = False

    def nr(self, name: str) -> int:
        return self.numbers[name]

    def signed(self, value: int) -> int:
        """A register's value as the signed long the target sees."""
        bits = self.word * 8
        value &= (1 << bits) - 1
        return value - (1 << bits) if value >> (bits - 1) else value


def _numbers(*values: int) -> dict[str, int]:
    assert len(values) == len(SYSCALL_NAMES)
    return dict(zip(SYSCALL_NAMES, values))


X86_64 = Arch(
    name="x86_64", elf_class=2, elf_machine=62, word=8, syscall_insn=b"\x0f\x05",
    nr_reg="rax", arg_regs=("rdi", "rsi", "rdx", "r10", "r8", "r9"), ret_reg="rax",
    ip_reg="rip", orig_nr_reg="orig_rax",
    numbers=_numbers(3, 9, 11, 13, 16, 56, 61, 72, 109, 112, 257, 292, 41, 42, 46),
)

I386 = Arch(
    name="i386", elf_class=1, elf_machine=3, word=4, syscall_insn=b"\xcd\x80",
    nr_reg="rax", arg_regs=("rbx", "rcx", "rdx", "rsi", "rdi", "rbp"), ret_reg="rax",
    ip_reg="rip", orig_nr_reg="orig_rax",
    numbers=_numbers(6, 192, 91, 174, 54, 120, 114, 55, 57, 66, 295, 330, 359, 362, 370),
)

# aarch64 runs in CI under qemu-system-aarch64 (.ci/arm64.sh): python-ptrace reads its registers
# with GETREGSET, and "no syscall in progress" lives outside them (NT_ARM_SYSTEM_CALL).
AARCH64 = Arch(
    name="aarch64", elf_class=2, elf_machine=183, word=8, syscall_insn=b"\x01\x00\x00\xd4",
    nr_reg="r8", arg_regs=("r0", "r1", "r2", "r3", "r4", "r5"), ret_reg="r0",
    ip_reg="pc", orig_nr_reg=None,
    numbers=_numbers(57, 222, 215, 134, 29, 220, 260, 25, 154, 157, 56, 24, 198, 203, 211),
    rewinds_before_stop=True,
)

ARCHES = (X86_64, I386, AARCH64)


def arch_of_elf(header: bytes) -> Arch | None:
    """The Arch for an ELF header (first 20 bytes of the executable), or None."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    elf_class = header[4]
    machine = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    for arch in ARCHES:
        if (arch.elf_class, arch.elf_machine) == (elf_class, machine):
            return arch
    return None
