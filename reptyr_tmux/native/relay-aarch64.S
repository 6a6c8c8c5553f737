// The steal-mode relay for aarch64, ``relay PID FD`` (the x86_64 one is relay-x86_64.S; native_relay.py
// says why and what for): the first process of a steal-mode pane. It
//   1. parses PID (1 .. 0x7fffffff) and FD (0 .. 0x7fffffff), in decimal (else exit 2);
//   2. takes its own copy of PID's fd FD (the pty master) with pidfd_open + pidfd_getfd (else exit 1);
//   3. renames itself "reptyr-relay" (the ready sign adopt waits for);
//   4. puts fd 0 (the pane's pty) in raw mode, as cfmakeraw does, keeping the old settings;
//   5. blocks SIGWINCH and reads it from a signalfd; copies the pane's window size to the master;
//   6. sends SIGWINCH to the session's foreground job, so full-screen programs repaint;
//   7. relays with ppoll: master -> fd 1, fd 0 -> master, and the window size again on each SIGWINCH,
//      until the master reports EIO/hang-up (the session is gone) or fd 0 ends; a write that would
//      block (a non-blocking master) waits in ppoll(POLLOUT);
//   8. restores fd 0's terminal settings and exits 0.
// No libc, no data segment: everything lives in a stack frame, the name in the code.
// native_relay.py carries these bytes (RELAY_AARCH64_CODE); tests/test_holder.py assembles this file
// again (aarch64-linux-gnu-as, or as on arm64) and checks that the two agree. To change it:
//   aarch64-linux-gnu-as -I reptyr_tmux/native -o relay.o reptyr_tmux/native/relay-aarch64.S
//   aarch64-linux-gnu-objcopy -O binary -j .text relay.o relay.bin && xxd -p relay.bin

        .include "common-aarch64.inc"

        // aarch64 Linux's own system call numbers (the generic table; common-linux.inc has the rest)
        .equ    SYS_IOCTL, 29
        .equ    SYS_CLOSE, 57
        .equ    SYS_READ, 63
        .equ    SYS_WRITE, 64
        .equ    SYS_SIGNALFD4, 74
        .equ    SYS_KILL, 129
        .equ    SYS_RT_SIGPROCMASK, 135
        .equ    SYS_PRCTL, 167
        .equ    CHUNK, 65536            // as ptyproxy.CHUNK

        // The stack frame, from x19 (as relay-x86_64.S's, from rbx)
        .equ    POLLFDS, 0              // struct pollfd[3]: fd 0, the master, the signalfd (revents at +6)
        .equ    PGRP, 24                // int: the session's foreground process group
        .equ    WINSIZE, 32             // struct winsize
        .equ    SIGMASK, 40             // sigset_t {SIGWINCH}
        .equ    SAVED, 48               // struct termios: fd 0's settings as we found them
        .equ    RAW, 84                 // struct termios: the raw copy
        .equ    OUT_POLLFD, 120         // struct pollfd: waiting until a full fd can take more
        .equ    BUFFER, 128             // CHUNK bytes (also where the signalfd_siginfo is read)

// Registers that live across phases (a syscall changes only x0; bl changes x30):
//   x19  the frame                       x20  the master fd
//   x21  the signalfd (negative: none)   x22  0 if SAVED holds fd 0's settings
//   x23  the buffer (x19 + BUFFER)

        // After a read: interrupted or would block -> ppoll again; 0 (EOF) or an error -> finish.
        .macro  retry_or_finish
        cmn     x0, #EINTR
        b.eq    loop
        cmn     x0, #EAGAIN
        b.eq    loop
        cmp     x0, #0
        b.le    finish                  // EOF, EIO
        .endm

        .text
        .global _start
_start:
        // 1. argv[1] (pid, > 0) into x20, argv[2] (fd) into x21. At entry sp points at argc.
        ldr     x0, [sp]                // argc
        cmp     x0, #3                  // exactly two arguments
        b.ne    usage
        ldr     x1, [sp, #16]           // argv[1]
        bl      parse                   // x0 = the pid
        cbz     x0, usage               // pid 0
        mov     x20, x0                 // the pid, for now
        ldr     x1, [sp, #24]           // argv[2]
        bl      parse                   // x0 = the fd
        mov     x21, x0                 // the fd, for now

        // 2. pidfd_open(pid, 0), pidfd_getfd(pidfd, fd, 0) -> x20, close(pidfd)
        mov     x0, x20
        mov     x1, #0                  // flags
        mov     x8, #SYS_PIDFD_OPEN
        svc     #0
        tbnz    x0, #63, fail           // -ESRCH: no such process
        mov     x23, x0                 // the pidfd, to close
        mov     x1, x21                 // the fd in that process
        mov     x2, #0                  // flags
        mov     x8, #SYS_PIDFD_GETFD    // (the copy is close-on-exec)
        svc     #0
        mov     x20, x0                 // the master (or -errno)
        mov     x0, x23
        mov     x8, #SYS_CLOSE
        svc     #0
        tbnz    x20, #63, fail          // -EPERM, -EBADF

        // 3. prctl(PR_SET_NAME, "reptyr-relay"): adopt waits for this name
        mov     x0, #15                 // PR_SET_NAME
        adr     x1, name
        mov     x8, #SYS_PRCTL
        svc     #0

        // The frame: x19 = its base, x23 = the buffer in it
        sub     sp, sp, #CHUNK
        sub     sp, sp, #BUFFER
        mov     x19, sp
        add     x23, x19, #BUFFER

        // 4. TCGETS fd 0 into SAVED (x22 = the result), a cfmakeraw copy in RAW, TCSETS it
        mov     x0, #0                  // fd 0
        mov     x1, #TCGETS
        add     x2, x19, #SAVED
        mov     x8, #SYS_IOCTL
        svc     #0
        mov     x22, x0                 // 0: restore SAVED at the end
        cbnz    x0, raw_done            // not a terminal: leave it
        mov     x9, #0
copy:
        add     x10, x19, #SAVED
        ldr     w11, [x10, x9]
        add     x10, x19, #RAW
        str     w11, [x10, x9]
        add     x9, x9, #4
        cmp     x9, #TERMIOS_SIZE
        b.ne    copy
        ldp     w10, w11, [x19, #RAW]   // c_iflag, c_oflag
        ldp     w12, w13, [x19, #RAW + 8]  // c_cflag, c_lflag
        mov     w9, #RAW_IFLAG_OFF
        bic     w10, w10, w9
        mov     w9, #RAW_OFLAG_OFF
        bic     w11, w11, w9
        mov     w9, #RAW_CFLAG_OFF
        bic     w12, w12, w9
        mov     w9, #RAW_CFLAG_ON
        orr     w12, w12, w9
        mov     w9, #RAW_LFLAG_OFF
        bic     w13, w13, w9
        stp     w10, w11, [x19, #RAW]
        stp     w12, w13, [x19, #RAW + 8]
        mov     w9, #1
        strb    w9, [x19, #RAW + VMIN_AT]  // c_cc[VMIN] = 1
        strb    wzr, [x19, #RAW + VTIME_AT]  // c_cc[VTIME] = 0
        mov     x0, #0                  // fd 0
        mov     x1, #TCSETS             // (now)
        add     x2, x19, #RAW
        mov     x8, #SYS_IOCTL
        svc     #0
raw_done:

        // 5. Block SIGWINCH, signalfd4 for it -> x21, copy the window size once
        mov     x9, #(1 << (SIGWINCH - 1))
        str     x9, [x19, #SIGMASK]
        mov     x0, #0                  // SIG_BLOCK
        add     x1, x19, #SIGMASK       // {SIGWINCH}
        mov     x2, #0                  // oldset = NULL
        mov     x3, #8                  // sizeof(sigset_t)
        mov     x8, #SYS_RT_SIGPROCMASK
        svc     #0
        mov     x0, #-1                 // a new signalfd
        add     x1, x19, #SIGMASK       // {SIGWINCH}
        mov     x2, #8                  // sizeof(sigset_t)
        mov     x3, #SFD_CLOEXEC
        mov     x8, #SYS_SIGNALFD4
        svc     #0
        mov     x21, x0                 // -errno: ppoll skips a negative fd
        bl      winsize

        // 6. kill(-pgrp, SIGWINCH) for the master's foreground process group, if it has one
        mov     x0, x20                 // the master
        mov     x1, #TIOCGPGRP
        add     x2, x19, #PGRP
        mov     x8, #SYS_IOCTL
        svc     #0
        cbnz    x0, nudged
        ldrsw   x0, [x19, #PGRP]
        cmp     x0, #0
        b.le    nudged                  // none (0 would mean: ours)
        neg     x0, x0                  // -pgrp: the whole group
        mov     x1, #SIGWINCH
        mov     x8, #SYS_KILL
        svc     #0
nudged:

        // 7. The pollfds {0, POLLIN}, {master, POLLIN}, {signalfd, POLLIN}; then ppoll and relay
        mov     w9, #POLLIN             // events = POLLIN, revents = 0
        str     wzr, [x19, #POLLFDS]
        str     w9, [x19, #POLLFDS + 4]
        str     w20, [x19, #POLLFDS + 8]
        str     w9, [x19, #POLLFDS + 12]
        str     w21, [x19, #POLLFDS + 16]
        str     w9, [x19, #POLLFDS + 20]
loop:
        mov     x0, x19                 // the pollfds
        ppoll_forever 3
        cmn     x0, #EINTR
        b.eq    loop
        tbnz    x0, #63, finish         // (never)
        // the master: output of the session
        ldrh    w9, [x19, #POLLFDS + 14]  // fds[1].revents
        tbnz    w9, #0, from_master     // POLLIN
        tst     w9, #POLLERR_HUP_NVAL
        b.ne    finish                  // hung up, nothing to read
        b       from_pane
from_master:
        mov     x0, x20                 // the master
        mov     x1, x23                 // the buffer
        mov     x2, #CHUNK
        mov     x8, #SYS_READ
        svc     #0
        retry_or_finish
        mov     x2, x0                  // what we read
        mov     x0, #1                  // fd 1, the pane
        mov     x1, x23
        bl      write_all
        // fd 0: what the user types in the pane (any revents: POLLHUP, POLLNVAL make read end it)
from_pane:
        ldrh    w9, [x19, #POLLFDS + 6]  // fds[0].revents
        cbz     w9, signals
        mov     x0, #0                  // fd 0
        mov     x1, x23
        mov     x2, #CHUNK
        mov     x8, #SYS_READ
        svc     #0
        retry_or_finish
        mov     x2, x0                  // what we read
        mov     x0, x20                 // the master
        mov     x1, x23
        bl      write_all
        // the signalfd: the pane was resized
signals:
        ldrh    w9, [x19, #POLLFDS + 22]  // fds[2].revents
        cbz     w9, loop
        mov     x0, x21                 // the signalfd
        mov     x1, x23
        mov     x2, #SIGINFO_SIZE
        mov     x8, #SYS_READ
        svc     #0
        bl      winsize
        b       loop

        // 8. Restore fd 0's settings (if we changed them) and exit_group(0)
finish:
        cbnz    x22, done               // TCGETS failed: nothing to restore
        mov     x0, #0                  // fd 0
        mov     x1, #TCSETS
        add     x2, x19, #SAVED
        mov     x8, #SYS_IOCTL
        svc     #0
done:
        mov     x0, #0                  // status 0
        b       exit

// write_all: write(x0, x1, x2) until all is written; waits in ppoll while the fd is full (a
// non-blocking master says EAGAIN); an error ends the relay. Keeps x19-x23.
write_all:
        mov     x9, x0                  // the fd
write_more:
        mov     x0, x9
        mov     x8, #SYS_WRITE
        svc     #0
        cmn     x0, #EINTR
        b.eq    write_more
        cmn     x0, #EAGAIN
        b.eq    wait_writable
        cmp     x0, #0
        b.le    finish                  // EIO, EPIPE: the end
        add     x1, x1, x0              // past what was written
        subs    x2, x2, x0              // what is left
        b.ne    write_more
        ret
wait_writable:
        mov     w10, #POLLOUT           // events = POLLOUT, revents = 0
        str     w9, [x19, #OUT_POLLFD]
        str     w10, [x19, #OUT_POLLFD + 4]
        mov     x10, x1                 // the rest to write, kept
        mov     x11, x2
        add     x0, x19, #OUT_POLLFD
        ppoll_forever 1                 // (its result: the next write tells)
        mov     x1, x10
        mov     x2, x11
        b       write_more

// winsize: TIOCGWINSZ on fd 0, TIOCSWINSZ on the master (nothing if fd 0 is no terminal)
winsize:
        mov     x0, #0                  // fd 0
        mov     x1, #TIOCGWINSZ
        add     x2, x19, #WINSIZE
        mov     x8, #SYS_IOCTL
        svc     #0
        cbnz    x0, winsize_done
        mov     x0, x20                 // the master
        mov     x1, #TIOCSWINSZ         // the kernel signals the job
        add     x2, x19, #WINSIZE
        mov     x8, #SYS_IOCTL
        svc     #0
winsize_done:
        ret

        parse_and_exits

name:
        .asciz  "reptyr-relay"          // read-only, in the code segment
