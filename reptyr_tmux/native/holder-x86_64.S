# The pane holder for x86_64, ``holder PID``: tmux runs it directly as a pane's first process, so the
# pane is ready about as soon as tmux has forked (no interpreter starts in it). It ignores SIGHUP, gives
# up its controlling tty (TIOCNOTTY on fd 0, the pane's pty), opens a pidfd for PID, renames itself
# "reptyr-holder" (the ready sign adopt waits for) and waits until the pidfd reports POLLIN (PID
# exited), retrying when a signal interrupts the wait; then it exits 0 and tmux closes the pane.
# Exit 2: not exactly one argument, or not a pid (1 .. 0x7fffffff in decimal); exit 1: no such
# process. Fds 0-2 (the pty) stay open, unread. Unlike the Python holder it checks no start time (adopt
# checks it again once the holder is ready) and writes no REPORT.
# No libc, no data segment: the sigaction and the pollfd live on the stack, the name in the code.
# holder.py carries these bytes (HOLDER_X86_64_CODE); tests/test_holder.py assembles this file again
# (as on x86_64, or x86_64-linux-gnu-as) and checks that the two agree. To change it:
#   as --64 -I reptyr_tmux/native -o holder.o reptyr_tmux/native/holder-x86_64.S
#   objcopy -O binary -j .text holder.o holder.bin && xxd -p holder.bin
        .include "common-x86_64.inc"

        .text
        .global _start
_start:
        # 1. PID from argv[1]. At entry rsp points at argc, then the argv pointers.
        mov     rcx, [rsp]              # argc
        cmp     rcx, 2                  # exactly one argument
        jne     usage
        mov     rsi, [rsp+16]           # argv[1]
        call    parse                   # rdx = the pid
        mov     rbx, rdx                # the pid, kept in rbx
        test    ebx, ebx
        jne     setup                   # pid 0 falls through to usage

        exits_and_parse                 # here, within a short jump of every jump to them

setup:
        # 2. rt_sigaction(SIGHUP, &{handler = SIG_IGN, flags = 0, restorer = 0, mask = 0}, NULL, 8)
        push    0                       # sa_mask
        push    0                       # sa_restorer
        push    0                       # sa_flags
        push    SIG_IGN                 # sa_handler
        mov     rsi, rsp                # arg2: act
        mov     edi, SIGHUP             # arg1
        xor     edx, edx                # arg3: oldact = NULL
        mov     r10d, SIGSET_SIZE       # arg4
        mov     eax, SYS_RT_SIGACTION
        syscall
        test    eax, eax
        jne     fail                    # (never) else TIOCNOTTY's SIGHUP would end us

        # 3. ioctl(0, TIOCNOTTY, 0): SIGHUP (ignored) and SIGCONT go to our own process group
        xor     edi, edi                # arg1: fd 0, the pane's pty
        mov     esi, TIOCNOTTY          # arg2
        xor     edx, edx
        mov     eax, SYS_IOCTL          # result ignored
        syscall

        # 4. pidfd_open(pid, 0)
        pidfd_open ebx
        js      fail                    # -ESRCH: no such process
        push    rax                     # struct pollfd {fd = pidfd,
        mov     word ptr [rsp+4], POLLIN  # events = POLLIN} (revents: the pidfd's upper half, 0)

        # 5. prctl(PR_SET_NAME, "reptyr-holder"): adopt waits for this name
        mov     edi, PR_SET_NAME        # arg1
        lea     rsi, [rip+name]         # arg2: the new comm
        mov     eax, SYS_PRCTL
        syscall

        # 6. poll until the target exits, then exit 0
        wait_for_pollin_then_exit

name:
        .asciz  "reptyr-holder"         # read-only, in the code segment
