// The pane holder for aarch64, ``holder PID`` (the x86_64 one is holder-x86_64.S, the same steps):
// tmux runs it directly as a pane's first process. It ignores SIGHUP, gives up its controlling tty
// (TIOCNOTTY on fd 0, the pane's pty), opens a pidfd for PID, renames itself "reptyr-holder" (the ready
// sign adopt waits for) and waits until the pidfd reports POLLIN (PID exited), retrying when a signal
// interrupts the wait; then it exits 0 and tmux closes the pane. Exit 2: not exactly one argument, or
// not a pid (1 .. 0x7fffffff in decimal); exit 1: no such process. Fds 0-2 (the pty) stay open, unread.
// No libc, no data segment: the sigaction and the pollfd live on the stack, the name in the code.
// holder.py carries these bytes (HOLDER_AARCH64_CODE); tests/test_holder.py assembles this file again
// (aarch64-linux-gnu-as, or as on arm64) and checks that the two agree. To change it:
//   aarch64-linux-gnu-as -I reptyr_tmux/native -o holder.o reptyr_tmux/native/holder-aarch64.S
//   aarch64-linux-gnu-objcopy -O binary -j .text holder.o holder.bin && xxd -p holder.bin
        .include "common-aarch64.inc"

        .text
        .global _start
_start:
        ldr     x0, [sp]                // argc (at entry sp points at argc, then the argv pointers)
        cmp     x0, #2                  // exactly one argument
        b.ne    usage
        ldr     x1, [sp, #16]           // argv[1]
        bl      parse                   // x0 = the pid
        cbz     x0, usage               // pid 0
        mov     x19, x0                 // the pid, kept in x19 (a syscall changes only x0)

        // rt_sigaction(SIGHUP, &{handler = SIG_IGN, flags = 0, restorer = 0, mask = 0}, NULL, 8)
        mov     x9, #1                  // SIG_IGN
        stp     x9, xzr, [sp, #-32]!    // sa_handler, sa_flags
        stp     xzr, xzr, [sp, #16]     // sa_restorer, sa_mask
        mov     x0, #1                  // SIGHUP
        mov     x1, sp                  // act
        mov     x2, #0                  // oldact = NULL
        mov     x3, #8                  // sizeof(sigset_t)
        mov     x8, #134                // rt_sigaction
        svc     #0
        cbnz    x0, fail                // (never) else TIOCNOTTY's SIGHUP would end us

        // ioctl(0, TIOCNOTTY, 0): SIGHUP (ignored) and SIGCONT go to our own process group
        mov     x0, #0                  // fd 0, the pane's pty
        mov     x1, #0x5422             // TIOCNOTTY
        mov     x2, #0
        mov     x8, #29                 // ioctl, result ignored
        svc     #0

        // pidfd_open(pid, 0)
        mov     x0, x19
        mov     x1, #0                  // flags
        mov     x8, #434                // pidfd_open
        svc     #0
        tbnz    x0, #63, fail           // -ESRCH: no such process
        orr     x9, x0, #0x100000000    // struct pollfd {fd = pidfd, events = POLLIN, revents = 0}
        str     x9, [sp]                // over the sigaction, done with

        // prctl(PR_SET_NAME, "reptyr-holder"): adopt waits for this name
        mov     x0, #15                 // PR_SET_NAME
        adr     x1, name
        mov     x8, #167                // prctl
        svc     #0

        // wait until the target exits
wait:
        mov     x0, sp                  // fds = &pollfd
        ppoll_forever 1
        cmn     x0, #4                  // -EINTR: a signal interrupted the wait
        b.eq    wait                    // wait again
        mov     x0, #0                  // status 0: the target exited
        b       exit

        parse_and_exits

name:
        .asciz  "reptyr-holder"         // read-only, in the code segment
