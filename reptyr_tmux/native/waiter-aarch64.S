// The pane holder's waiter for aarch64 (the x86_64 one is waiter-x86_64.S):
// exec'd by the Python holder with the target's pidfd on fd 3, it waits until that fd reports POLLIN
// (the target exited), retrying when a signal interrupts the wait, then exits 0. No libc, no data:
// the pollfd lives on the stack. holder.py carries these bytes; tests/test_holder.py assembles this
// file again (aarch64-linux-gnu-as, or as on arm64) and checks that the two agree. To change it:
//   aarch64-linux-gnu-as -o waiter.o reptyr_tmux/native/waiter-aarch64.S
//   aarch64-linux-gnu-objcopy -O binary -j .text waiter.o waiter.bin && xxd -p waiter.bin
        .text
        .global _start
_start:
        mov     x9, #3                  // struct pollfd: fd = 3 (low 32 bits) ...
        movk    x9, #1, lsl #32         // ... events = POLLIN, revents = 0
        str     x9, [sp, #-16]!         // on the stack, which stays 16-byte aligned
wait:
        mov     x0, sp                  // fds = &pollfd
        mov     x1, #1                  // nfds = 1
        mov     x2, #0                  // timeout = NULL: forever
        mov     x3, #0                  // sigmask = NULL: ours as it is
        mov     x4, #0                  // sigsetsize (unused without a mask)
        mov     x8, #73                 // ppoll (aarch64 has no poll)
        svc     #0
        cmn     x0, #4                  // -EINTR: a signal interrupted the wait
        b.eq    wait                    // wait again
        mov     x0, #0                  // status 0
        mov     x8, #94                 // exit_group
        svc     #0
