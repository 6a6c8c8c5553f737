# The pane holder's waiter for x86_64: exec'd by the Python holder (holder.py, exec_waiter) with the
# target's pidfd on fd 3, it waits until that fd reports POLLIN (the target exited), retrying when a
# signal interrupts the wait, then exits 0 (its only status). No libc, no data: the pollfd lives on the
# stack. holder.py carries these bytes (WAITER_X86_64_CODE); tests/test_holder.py assembles this file
# again (as on x86_64, or x86_64-linux-gnu-as) and checks that the two agree. To change it:
#   as --64 -I reptyr_tmux/native -o waiter.o reptyr_tmux/native/waiter-x86_64.S
#   objcopy -O binary -j .text waiter.o waiter.bin && xxd -p waiter.bin
        .include "common-x86_64.inc"

        .equ    PIDFD_FD, 3             # where the Python holder put the pidfd (holder.PIDFD_FD)

        .text
        .global _start
_start:
        # struct pollfd {int fd = 3; short events = POLLIN; short revents = 0} in one register
        mov     rax, (POLLIN << 32) | PIDFD_FD
        push    rax                     # on the stack
        wait_for_pollin_then_exit
