"""The steal-mode relay as a hand-assembled x86_64 or aarch64 ELF: ``relay_argv(HOLDER_PID, FD)``.

Why: the relay is the first process of a steal-mode pane and lives as long as the stolen session,
copying every byte the session prints. The Python relay (``python -m reptyr_tmux.native.relay``, see
relay.py and ptyproxy.py) costs ~7 ms CPU per MiB relayed and keeps ~13 MB resident; the C reptyr's
proxy costs ~5.5 ms/MiB and 1.8 MB. This ELF (no libc, one PT_LOAD segment, built with holder.py's
assembler and cached like the holder ELF) does the same job in a few pages of memory and with
one read and one write system call per chunk. On aarch64 it is the same program written as assembly,
relay-aarch64.S beside this file (ppoll for poll; its bytes are RELAY_AARCH64_CODE below).

What it does, as ``relay PID FD`` (exit 2: bad arguments; 1: cannot take the fd; 0: session over):

1. parses PID and FD (decimal);
2. takes its own copy of PID's fd FD (the pty master) with pidfd_open + pidfd_getfd;
3. renames itself "reptyr-relay" (RELAY_NAME: the ready sign adopt waits for);
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

import errno
import signal
import termios

from reptyr_tmux.engine.pidfd import SYS_PIDFD_GETFD
from reptyr_tmux.native.holder import (
    POLLIN,
    PR_SET_NAME,
    SYS_IOCTL,
    SYS_POLL,
    SYS_PRCTL,
    _assemble,
    _jump,
    _label,
    _le32,
    _rip_relative,
    cached_elf,
    exits,
    native_allowed,
    native_elf,
    parse_subroutine,
    pidfd_open,
)
from reptyr_tmux.native.relay import RELAY_NAME

FORCE_PYTHON_ENV = "REPTYR_TMUX_RELAY_PYTHON"
ELF_PREFIX = "relay"

SYS_READ = 0
SYS_WRITE = 1
SYS_CLOSE = 3
SYS_RT_SIGPROCMASK = 14
SYS_KILL = 62
SYS_SIGNALFD4 = 289
SIG_BLOCK = 0
SIGSET_SIZE = 8  # the kernel's sigset_t: 64 bits
SFD_CLOEXEC = 0o2000000
POLLOUT = 0x0004
POLLERR, POLLHUP, POLLNVAL = 0x0008, 0x0010, 0x0020
TCGETS, TCSETS = termios.TCGETS, termios.TCSETS
TIOCGWINSZ, TIOCSWINSZ, TIOCGPGRP = termios.TIOCGWINSZ, termios.TIOCSWINSZ, termios.TIOCGPGRP
CHUNK = 65536  # as ptyproxy.CHUNK
SIGINFO_SIZE = 128  # struct signalfd_siginfo

# cfmakeraw(3), on the kernel's struct termios {u32 iflag, oflag, cflag, lflag; u8 line; u8 cc[19]}
RAW_IFLAG_OFF = (termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                 | termios.IGNCR | termios.ICRNL | termios.IXON)
RAW_OFLAG_OFF = termios.OPOST
RAW_CFLAG_OFF = termios.CSIZE | termios.PARENB
RAW_CFLAG_ON = termios.CS8
RAW_LFLAG_OFF = termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN
TERMIOS_SIZE = 36
C_CC = 17  # offset of c_cc in the kernel's struct termios

# The stack frame, addressed from rbx (rsp moves with call/push): small things first, within a
# signed 8-bit displacement, then the copy buffer (also where the signalfd_siginfo is read).
POLLFDS = 0  # struct pollfd[3]: fd 0, the master, the signalfd (revents at +6 of each)
PGRP = 24  # int: the session's foreground process group
WINSIZE = 32  # struct winsize
SIGMASK = 40  # sigset_t {SIGWINCH}
SAVED = 48  # struct termios: fd 0's settings as we found them
RAW = SAVED + TERMIOS_SIZE  # 84: the raw copy
OUT_POLLFD = 120  # struct pollfd: waiting until a full fd can take more
BUFFER = 128
FRAME = BUFFER + CHUNK

assert RAW + TERMIOS_SIZE <= OUT_POLLFD and OUT_POLLFD + 8 <= BUFFER  # no overlaps


def _jump32(opcode: bytes, label: str) -> tuple[str, bytes, str, int]:
    """A jump or call with a 32-bit displacement (the same encoding as a rip-relative operand)."""
    return _rip_relative(opcode, label)


def _b(value: int) -> bytes:
    """An 8-bit immediate or displacement."""
    return value.to_bytes(1, "little", signed=value < 0)


# --- the program, phase by phase -------------------------------------------------------------------
#
# Registers that live across phases (syscall clobbers only rax, rcx and r11):
#   rbx  the frame (FRAME bytes of stack)     r12  the master fd
#   r13  the signalfd (negative: none)        r14  0 if SAVED holds fd 0's settings
#   r15  the buffer (rbx + BUFFER)


def _arguments() -> list:
    """1. argv[1] (pid, > 0) into r12, argv[2] (fd) into r13. At entry rsp points at argc."""
    return [
        b"\x48\x8b\x0c\x24",                      # mov    rcx, [rsp]      ; argc
        b"\x48\x83\xf9\x03",                      # cmp    rcx, 3          ; exactly two arguments
        _jump32(b"\x0f\x85", "usage"),            # jne    usage
        b"\x48\x8b\x74\x24\x10",                  # mov    rsi, [rsp+16]   ; argv[1]
        _jump32(b"\xe8", "parse"),                # call   parse           ; rdx = the pid
        b"\x85\xd2",                              # test   edx, edx
        _jump32(b"\x0f\x84", "usage"),            # je     usage           ; pid 0
        b"\x49\x89\xd4",                          # mov    r12, rdx        ; the pid, for now
        b"\x48\x8b\x74\x24\x18",                  # mov    rsi, [rsp+24]   ; argv[2]
        _jump32(b"\xe8", "parse"),                # call   parse           ; rdx = the fd
        b"\x49\x89\xd5",                          # mov    r13, rdx        ; the fd, for now
    ]


def _take_master() -> list:
    """2. pidfd_open(pid, 0), pidfd_getfd(pidfd, fd, 0) -> r12, close(pidfd)."""
    return [
        *pidfd_open(b"\x44\x89\xe7",              # mov    edi, r12d       ; arg1: pid
                    _jump32(b"\x0f\x88", "fail")),  # js     fail            ; -ESRCH: no such process
        b"\x49\x89\xc7",                          # mov    r15, rax        ; the pidfd, to close
        b"\x89\xc7",                              # mov    edi, eax        ; arg1: pidfd
        b"\x44\x89\xee",                          # mov    esi, r13d       ; arg2: the fd in that process
        b"\x31\xd2",                              # xor    edx, edx        ; arg3: flags = 0
        b"\xb8" + _le32(SYS_PIDFD_GETFD),         # mov    eax, 438        ; SYS_pidfd_getfd (cloexec)
        b"\x0f\x05",                              # syscall
        b"\x49\x89\xc4",                          # mov    r12, rax        ; the master (or -errno)
        b"\x44\x89\xff",                          # mov    edi, r15d       ; arg1: pidfd
        b"\xb8" + _le32(SYS_CLOSE),               # mov    eax, 3          ; SYS_close
        b"\x0f\x05",                              # syscall
        b"\x45\x85\xe4",                          # test   r12d, r12d
        _jump32(b"\x0f\x88", "fail"),             # js     fail            ; -EPERM, -EBADF
    ]


def _announce_ready() -> list:
    """3. prctl(PR_SET_NAME, "reptyr-relay"): adopt waits for this name."""
    return [
        b"\xbf" + _le32(PR_SET_NAME),             # mov    edi, 15         ; arg1: PR_SET_NAME
        _rip_relative(b"\x48\x8d\x35", "name"),   # lea    rsi, [rip+name] ; arg2: the new comm
        b"\xb8" + _le32(SYS_PRCTL),               # mov    eax, 157        ; SYS_prctl
        b"\x0f\x05",                              # syscall
    ]


def _frame() -> list:
    """The stack frame: rbx = its base, r15 = the buffer in it."""
    return [
        b"\x48\x81\xec" + _le32(FRAME),           # sub    rsp, FRAME      ; 64 KiB + 128
        b"\x48\x89\xe3",                          # mov    rbx, rsp        ; the frame base
        b"\x4c\x8d\xbb" + _le32(BUFFER),          # lea    r15, [rbx+128]  ; the buffer
    ]


def _raw_mode() -> list:
    """4. TCGETS fd 0 into SAVED (r14 = the result), a cfmakeraw copy in RAW, TCSETS it."""
    vmin, vtime = RAW + C_CC + termios.VMIN, RAW + C_CC + termios.VTIME
    return [
        b"\x31\xff",                              # xor    edi, edi        ; arg1: fd 0
        b"\xbe" + _le32(TCGETS),                  # mov    esi, 0x5401     ; arg2: TCGETS
        b"\x48\x8d\x53" + _b(SAVED),              # lea    rdx, [rbx+48]   ; arg3: &saved
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall
        b"\x49\x89\xc6",                          # mov    r14, rax        ; 0: restore saved at the end
        b"\x85\xc0",                              # test   eax, eax
        _jump(b"\x75", "raw_done"),                # jne    raw_done        ; not a terminal: leave it
        b"\x48\x8d\x73" + _b(SAVED),              # lea    rsi, [rbx+48]   ; from saved
        b"\x48\x8d\x7b" + _b(RAW),                # lea    rdi, [rbx+84]   ; to raw
        b"\xb9" + _le32(TERMIOS_SIZE),            # mov    ecx, 36
        b"\xf3\xa4",                              # rep movsb
        b"\x81\x63" + _b(RAW) + _le32(~RAW_IFLAG_OFF),      # and dword [rbx+84], ~0x5eb  ; c_iflag
        b"\x81\x63" + _b(RAW + 4) + _le32(~RAW_OFLAG_OFF),  # and dword [rbx+88], ~OPOST  ; c_oflag
        b"\x81\x63" + _b(RAW + 8) + _le32(~RAW_CFLAG_OFF),  # and dword [rbx+92], ~0x130  ; c_cflag
        b"\x81\x4b" + _b(RAW + 8) + _le32(RAW_CFLAG_ON),    # or  dword [rbx+92], CS8
        b"\x81\x63" + _b(RAW + 12) + _le32(~RAW_LFLAG_OFF),  # and dword [rbx+96], ~0x804b ; c_lflag
        b"\xc6\x43" + _b(vmin) + b"\x01",         # mov    byte [rbx+107], 1 ; c_cc[VMIN] = 1
        b"\xc6\x43" + _b(vtime) + b"\x00",        # mov    byte [rbx+106], 0 ; c_cc[VTIME] = 0
        b"\x31\xff",                              # xor    edi, edi        ; arg1: fd 0
        b"\xbe" + _le32(TCSETS),                  # mov    esi, 0x5402     ; arg2: TCSETS (now)
        b"\x48\x8d\x53" + _b(RAW),                # lea    rdx, [rbx+84]   ; arg3: &raw
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall
        _label("raw_done"),
    ]


def _window_signals() -> list:
    """5. Block SIGWINCH, signalfd4 for it -> r13, copy the window size once."""
    return [
        b"\x48\xc7\x43" + _b(SIGMASK) + _le32(1 << (signal.SIGWINCH - 1)),  # mov qword [rbx+40], 1<<27
        b"\x31\xff",                              # xor    edi, edi        ; arg1: SIG_BLOCK
        b"\x48\x8d\x73" + _b(SIGMASK),            # lea    rsi, [rbx+40]   ; arg2: {SIGWINCH}
        b"\x31\xd2",                              # xor    edx, edx        ; arg3: oldset = NULL
        b"\x41\xba" + _le32(SIGSET_SIZE),         # mov    r10d, 8         ; arg4: sizeof(sigset_t)
        b"\xb8" + _le32(SYS_RT_SIGPROCMASK),      # mov    eax, 14         ; SYS_rt_sigprocmask
        b"\x0f\x05",                              # syscall
        b"\xbf" + _le32(-1),                      # mov    edi, -1         ; arg1: a new signalfd
        b"\x48\x8d\x73" + _b(SIGMASK),            # lea    rsi, [rbx+40]   ; arg2: {SIGWINCH}
        b"\xba" + _le32(SIGSET_SIZE),             # mov    edx, 8          ; arg3: sizeof(sigset_t)
        b"\x41\xba" + _le32(SFD_CLOEXEC),         # mov    r10d, 0x80000   ; arg4: SFD_CLOEXEC
        b"\xb8" + _le32(SYS_SIGNALFD4),           # mov    eax, 289        ; SYS_signalfd4
        b"\x0f\x05",                              # syscall
        b"\x49\x89\xc5",                          # mov    r13, rax        ; -errno: poll skips it
        _jump32(b"\xe8", "winsize"),              # call   winsize
    ]


def _nudge_foreground() -> list:
    """6. kill(-pgrp, SIGWINCH) for the master's foreground process group, if it has one."""
    return [
        b"\x44\x89\xe7",                          # mov    edi, r12d       ; arg1: the master
        b"\xbe" + _le32(TIOCGPGRP),               # mov    esi, 0x540f     ; arg2: TIOCGPGRP
        b"\x48\x8d\x53" + _b(PGRP),               # lea    rdx, [rbx+24]   ; arg3: &pgrp
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall
        b"\x85\xc0",                              # test   eax, eax
        _jump(b"\x75", "nudged"),                  # jne    nudged
        b"\x8b\x7b" + _b(PGRP),                   # mov    edi, [rbx+24]   ; pgrp
        b"\x85\xff",                              # test   edi, edi
        _jump(b"\x7e", "nudged"),                  # jle    nudged          ; none (0 would mean: ours)
        b"\xf7\xdf",                              # neg    edi             ; arg1: -pgrp, the whole group
        b"\xbe" + _le32(signal.SIGWINCH),         # mov    esi, 28         ; arg2: SIGWINCH
        b"\xb8" + _le32(SYS_KILL),                # mov    eax, 62         ; SYS_kill
        b"\x0f\x05",                              # syscall
        _label("nudged"),
    ]


def _poll_fds() -> list:
    """The pollfds: {0, POLLIN}, {master, POLLIN}, {signalfd, POLLIN}; revents start at 0."""
    return [
        b"\xc7\x43" + _b(POLLFDS) + _le32(0),     # mov    dword [rbx], 0      ; fds[0].fd = 0
        b"\xc7\x43" + _b(POLLFDS + 4) + _le32(POLLIN),  # mov dword [rbx+4], 1 ; .events = POLLIN
        b"\x44\x89\x63" + _b(POLLFDS + 8),        # mov    [rbx+8], r12d       ; fds[1].fd = master
        b"\xc7\x43" + _b(POLLFDS + 12) + _le32(POLLIN),  # mov dword [rbx+12], 1
        b"\x44\x89\x6b" + _b(POLLFDS + 16),       # mov    [rbx+16], r13d      ; fds[2].fd = signalfd
        b"\xc7\x43" + _b(POLLFDS + 20) + _le32(POLLIN),  # mov dword [rbx+20], 1
    ]


def _read_into_buffer(fd_to_edi: bytes, size: int) -> list:
    """read(fd, buffer, size): `fd_to_edi` is the instruction that puts the fd in edi."""
    return [
        fd_to_edi,                                # mov    edi, fd         ; arg1
        b"\x4c\x89\xfe",                          # mov    rsi, r15        ; arg2: the buffer
        b"\xba" + _le32(size),                    # mov    edx, size       ; arg3
        b"\x31\xc0",                              # xor    eax, eax        ; SYS_read
        b"\x0f\x05",                              # syscall
    ]


def _copy(read_fd_to_edi: bytes, write_fd_to_edi: bytes) -> list:
    """One chunk from one fd to the other: read() it into the buffer, then write_all() what came."""
    return [
        *_read_into_buffer(read_fd_to_edi, CHUNK),
        *_retry_or_finish(),
        write_fd_to_edi,                          #                        ; arg1: where it goes
        b"\x4c\x89\xfe",                          # mov    rsi, r15        ; arg2: the buffer
        b"\x48\x89\xc2",                          # mov    rdx, rax        ; arg3: what we read
        _jump32(b"\xe8", "write_all"),            # call   write_all
    ]


def _retry_or_finish() -> list:
    """After a read: interrupted or would block -> poll again; 0 (EOF) or an error -> finish."""
    return [
        b"\x48\x83\xf8" + _b(-errno.EINTR),       # cmp    rax, -EINTR
        _jump32(b"\x0f\x84", "loop"),             # je     loop
        b"\x48\x83\xf8" + _b(-errno.EAGAIN),      # cmp    rax, -EAGAIN
        _jump32(b"\x0f\x84", "loop"),             # je     loop
        b"\x48\x85\xc0",                          # test   rax, rax
        _jump32(b"\x0f\x8e", "finish"),           # jle    finish          ; EOF, EIO
    ]


def _relay_loop() -> list:
    """7. poll, then: master -> fd 1, fd 0 -> master, SIGWINCH -> copy the window size."""
    return [
        *_poll_fds(),
        _label("loop"),
        b"\x48\x89\xdf",                          # mov    rdi, rbx        ; arg1: the pollfds
        b"\xbe" + _le32(3),                       # mov    esi, 3          ; arg2: nfds
        b"\xba" + _le32(-1),                      # mov    edx, -1         ; arg3: no timeout
        b"\xb8" + _le32(SYS_POLL),                # mov    eax, 7          ; SYS_poll
        b"\x0f\x05",                              # syscall
        b"\x48\x83\xf8" + _b(-errno.EINTR),       # cmp    rax, -EINTR
        _jump(b"\x74", "loop"),                    # je     loop
        b"\x48\x85\xc0",                          # test   rax, rax
        _jump32(b"\x0f\x88", "finish"),           # js     finish          ; (never)
        # the master: output of the session
        b"\x0f\xb7\x43" + _b(POLLFDS + 14),       # movzx  eax, word [rbx+14] ; fds[1].revents
        b"\xa8" + _b(POLLIN),                     # test   al, POLLIN
        _jump(b"\x75", "from_master"),             # jne    from_master
        b"\xa8" + _b(POLLERR | POLLHUP | POLLNVAL),  # test al, 0x38
        _jump32(b"\x0f\x85", "finish"),           # jne    finish          ; hung up, nothing to read
        _jump(b"\xeb", "from_pane"),               # jmp    from_pane
        _label("from_master"),
        *_copy(b"\x44\x89\xe7",                   # mov    edi, r12d       ; from the master
               b"\xbf" + _le32(1)),                 # mov    edi, 1          ; to fd 1, the pane
        # fd 0: what the user types in the pane (any revents: POLLHUP, POLLNVAL make read end it)
        _label("from_pane"),
        b"\x66\x83\x7b" + _b(POLLFDS + 6) + b"\x00",  # cmp  word [rbx+6], 0 ; fds[0].revents
        _jump(b"\x74", "signals"),                 # je     signals
        *_copy(b"\x31\xff",                        # xor    edi, edi        ; from fd 0
               b"\x44\x89\xe7"),                  # mov    edi, r12d       ; to the master
        # the signalfd: the pane was resized
        _label("signals"),
        b"\x66\x83\x7b" + _b(POLLFDS + 22) + b"\x00",  # cmp word [rbx+22], 0 ; fds[2].revents
        _jump32(b"\x0f\x84", "loop"),             # je     loop
        *_read_into_buffer(b"\x44\x89\xef", SIGINFO_SIZE),  # mov edi, r13d ; the signalfd
        _jump32(b"\xe8", "winsize"),              # call   winsize
        _jump32(b"\xe9", "loop"),                 # jmp    loop
    ]


def _finish() -> list:
    """8. Restore fd 0's settings (if we changed them) and exit_group(0)."""
    return [
        _label("finish"),
        b"\x4d\x85\xf6",                          # test   r14, r14        ; did TCGETS work?
        _jump(b"\x75", "done"),                    # jne    done
        b"\x31\xff",                              # xor    edi, edi        ; arg1: fd 0
        b"\xbe" + _le32(TCSETS),                  # mov    esi, 0x5402     ; arg2: TCSETS
        b"\x48\x8d\x53" + _b(SAVED),              # lea    rdx, [rbx+48]   ; arg3: &saved
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall
        _label("done"),
        b"\x31\xff",                              # xor    edi, edi        ; status 0
        _jump(b"\xeb", "exit"),                    # jmp    exit
    ]


def _write_all_subroutine() -> list:
    """write_all: write(edi, rsi, rdx) until all is written; waits in poll while the fd is full
    (a non-blocking master says EAGAIN); an error ends the relay. Keeps rbx, r12-r15."""
    return [
        _label("write_all"),
        b"\xb8" + _le32(SYS_WRITE),               # mov    eax, 1          ; SYS_write
        b"\x0f\x05",                              # syscall                ; rdi, rsi, rdx survive
        b"\x48\x83\xf8" + _b(-errno.EINTR),       # cmp    rax, -EINTR
        _jump(b"\x74", "write_all"),               # je     write_all
        b"\x48\x83\xf8" + _b(-errno.EAGAIN),      # cmp    rax, -EAGAIN
        _jump(b"\x74", "wait_writable"),           # je     wait_writable
        b"\x48\x85\xc0",                          # test   rax, rax
        _jump32(b"\x0f\x8e", "finish"),           # jle    finish          ; EIO, EPIPE: the end
        b"\x48\x01\xc6",                          # add    rsi, rax        ; past what was written
        b"\x48\x29\xc2",                          # sub    rdx, rax        ; what is left
        _jump(b"\x75", "write_all"),               # jne    write_all
        b"\xc3",                                  # ret
        _label("wait_writable"),
        b"\x89\x7b" + _b(OUT_POLLFD),             # mov    [rbx+120], edi  ; pollfd.fd
        b"\xc7\x43" + _b(OUT_POLLFD + 4) + _le32(POLLOUT),  # mov dword [rbx+124], 4 ; .events = POLLOUT
        b"\x57",                                  # push   rdi
        b"\x56",                                  # push   rsi
        b"\x52",                                  # push   rdx
        b"\x48\x8d\x7b" + _b(OUT_POLLFD),         # lea    rdi, [rbx+120]  ; arg1: &pollfd
        b"\xbe" + _le32(1),                       # mov    esi, 1          ; arg2: nfds
        b"\xba" + _le32(-1),                      # mov    edx, -1         ; arg3: no timeout
        b"\xb8" + _le32(SYS_POLL),                # mov    eax, 7          ; SYS_poll (result: write tells)
        b"\x0f\x05",                              # syscall
        b"\x5a",                                  # pop    rdx
        b"\x5e",                                  # pop    rsi
        b"\x5f",                                  # pop    rdi
        _jump(b"\xeb", "write_all"),               # jmp    write_all
    ]


def _winsize_subroutine() -> list:
    """winsize: TIOCGWINSZ on fd 0, TIOCSWINSZ on the master (nothing if fd 0 is no terminal)."""
    return [
        _label("winsize"),
        b"\x31\xff",                              # xor    edi, edi        ; arg1: fd 0
        b"\xbe" + _le32(TIOCGWINSZ),              # mov    esi, 0x5413     ; arg2: TIOCGWINSZ
        b"\x48\x8d\x53" + _b(WINSIZE),            # lea    rdx, [rbx+32]   ; arg3: &winsize
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall
        b"\x85\xc0",                              # test   eax, eax
        _jump(b"\x75", "winsize_done"),            # jne    winsize_done
        b"\x44\x89\xe7",                          # mov    edi, r12d       ; arg1: the master
        b"\xbe" + _le32(TIOCSWINSZ),              # mov    esi, 0x5414     ; arg2: TIOCSWINSZ
        b"\x48\x8d\x53" + _b(WINSIZE),            # lea    rdx, [rbx+32]   ; arg3: &winsize
        b"\xb8" + _le32(SYS_IOCTL),               # mov    eax, 16         ; SYS_ioctl
        b"\x0f\x05",                              # syscall                ; the kernel signals the job
        _label("winsize_done"),
        b"\xc3",                                  # ret
    ]


def relay_code() -> bytes:
    """x86_64 code for ``relay PID FD``: the eight phases above, then the subroutines and the name."""
    return _assemble([
        *_arguments(),
        *_take_master(),
        *_announce_ready(),
        *_frame(),
        *_raw_mode(),
        *_window_signals(),
        *_nudge_foreground(),
        *_relay_loop(),
        *_finish(),
        *exits(),
        *parse_subroutine(),
        *_write_all_subroutine(),
        *_winsize_subroutine(),
        _label("name"),
        RELAY_NAME + b"\x00",                     # "reptyr-relay\0" (read-only, in the code segment)
    ])


def relay_elf(for_machine: str | None = None) -> bytes:
    """The relay as a static ELF64 executable for `for_machine` (None: ours): ``relay PID FD``."""
    return native_elf(for_machine, relay_code, RELAY_AARCH64_CODE)


# The aarch64 relay: relay-aarch64.S (beside this file) as assembled (test_holder.py checks they agree).
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
