# The steal-mode relay for x86_64, ``relay PID FD`` (native_relay.py says why and what for): the first
# process of a steal-mode pane. It
#   1. parses PID (1 .. 0x7fffffff) and FD (0 .. 0x7fffffff), in decimal (else exit 2);
#   2. takes its own copy of PID's fd FD (the pty master) with pidfd_open + pidfd_getfd (else exit 1);
#   3. renames itself "reptyr-relay" (the ready sign adopt waits for);
#   4. puts fd 0 (the pane's pty) in raw mode, as cfmakeraw does, keeping the old settings;
#   5. blocks SIGWINCH and reads it from a signalfd; copies the pane's window size to the master;
#   6. sends SIGWINCH to the session's foreground job, so full-screen programs repaint;
#   7. relays with poll: master -> fd 1, fd 0 -> master, and the window size again on each SIGWINCH,
#      until the master reports EIO/hang-up (the session is gone) or fd 0 ends; a write that would
#      block (a non-blocking master) waits in poll(POLLOUT);
#   8. restores fd 0's terminal settings and exits 0.
# No libc, no data segment: everything lives in a stack frame, the name in the code.
# native_relay.py carries these bytes (RELAY_X86_64_CODE); tests/test_holder.py assembles this file
# again (as on x86_64, or x86_64-linux-gnu-as) and checks that the two agree. To change it:
#   as --64 -I reptyr_tmux/native -o relay.o reptyr_tmux/native/relay-x86_64.S
#   objcopy -O binary -j .text relay.o relay.bin && xxd -p relay.bin
# The jumps written {disp32} keep a 4-byte displacement even where one byte would reach, as this program
# was first laid out (gas would shorten them).

        .include "common-x86_64.inc"

        .equ    CHUNK, 65536            # as ptyproxy.CHUNK

        # The stack frame, addressed from rbx (rsp moves with call/push): small things first, within a
        # signed 8-bit displacement, then the copy buffer.
        .equ    POLLFDS, 0              # struct pollfd[3]: fd 0, the master, the signalfd (revents at +6)
        .equ    PGRP, 24                # int: the session's foreground process group
        .equ    WINSIZE, 32             # struct winsize
        .equ    SIGMASK, 40             # sigset_t {SIGWINCH}
        .equ    SAVED, 48               # struct termios: fd 0's settings as we found them
        .equ    RAW, 84                 # struct termios: the raw copy
        .equ    OUT_POLLFD, 120         # struct pollfd: waiting until a full fd can take more
        .equ    BUFFER, 128             # CHUNK bytes (also where the signalfd_siginfo is read)
        .equ    FRAME, BUFFER + CHUNK

# Registers that live across phases (a syscall changes only rax, rcx and r11):
#   rbx  the frame                       r12  the master fd
#   r13  the signalfd (negative: none)   r14  0 if SAVED holds fd 0's settings
#   r15  the buffer (rbx + BUFFER)

        # After a read: interrupted or would block -> poll again; 0 (EOF) or an error -> finish.
        .macro  retry_or_finish
        cmp     rax, -EINTR
        {disp32} je loop
        cmp     rax, -EAGAIN
        {disp32} je loop
        test    rax, rax
        {disp32} jle finish             # EOF, EIO
        .endm

        # One chunk from one fd to the other: read it into the buffer, then write_all what came. Each
        # argument is the instruction that puts its fd in edi.
        .macro  copy_chunk from_fd_to_edi, to_fd_to_edi
        \from_fd_to_edi                 # arg1: where it comes from
        mov     rsi, r15                # arg2: the buffer
        mov     edx, CHUNK              # arg3
        xor     eax, eax                # SYS_READ
        syscall
        retry_or_finish
        \to_fd_to_edi                   # arg1: where it goes
        mov     rsi, r15                # arg2: the buffer
        mov     rdx, rax                # arg3: what we read
        call    write_all
        .endm

        .text
        .global _start
_start:
        # 1. argv[1] (pid, > 0) into r12, argv[2] (fd) into r13. At entry rsp points at argc.
        mov     rcx, [rsp]              # argc
        cmp     rcx, 3                  # exactly two arguments
        {disp32} jne usage
        mov     rsi, [rsp+16]           # argv[1]
        call    parse                   # rdx = the pid
        test    edx, edx
        {disp32} je usage               # pid 0
        mov     r12, rdx                # the pid, for now
        mov     rsi, [rsp+24]           # argv[2]
        call    parse                   # rdx = the fd
        mov     r13, rdx                # the fd, for now

        # 2. pidfd_open(pid, 0), pidfd_getfd(pidfd, fd, 0) -> r12, close(pidfd)
        pidfd_open r12d
        {disp32} js fail                # -ESRCH: no such process
        mov     r15, rax                # the pidfd, to close
        mov     edi, eax                # arg1: the pidfd
        mov     esi, r13d               # arg2: the fd in that process
        xor     edx, edx                # arg3: flags = 0
        mov     eax, SYS_PIDFD_GETFD    # (the copy is close-on-exec)
        syscall
        mov     r12, rax                # the master (or -errno)
        mov     edi, r15d               # arg1: the pidfd
        mov     eax, SYS_CLOSE
        syscall
        test    r12d, r12d
        {disp32} js fail                # -EPERM, -EBADF

        # 3. prctl(PR_SET_NAME, "reptyr-relay"): adopt waits for this name
        mov     edi, PR_SET_NAME        # arg1
        lea     rsi, [rip+name]         # arg2: the new comm
        mov     eax, SYS_PRCTL
        syscall

        # The frame: rbx = its base, r15 = the buffer in it
        sub     rsp, FRAME
        mov     rbx, rsp
        lea     r15, [rbx+BUFFER]

        # 4. TCGETS fd 0 into SAVED (r14 = the result), a cfmakeraw copy in RAW, TCSETS it
        xor     edi, edi                # arg1: fd 0
        mov     esi, TCGETS             # arg2
        lea     rdx, [rbx+SAVED]        # arg3
        mov     eax, SYS_IOCTL
        syscall
        mov     r14, rax                # 0: restore SAVED at the end
        test    eax, eax
        jne     raw_done                # not a terminal: leave it
        lea     rsi, [rbx+SAVED]        # from SAVED
        lea     rdi, [rbx+RAW]          # to RAW
        mov     ecx, TERMIOS_SIZE
        rep movsb
        and     dword ptr [rbx+RAW], ~RAW_IFLAG_OFF       # c_iflag
        and     dword ptr [rbx+RAW+4], ~RAW_OFLAG_OFF_IMM32  # c_oflag
        and     dword ptr [rbx+RAW+8], ~RAW_CFLAG_OFF     # c_cflag
        or      dword ptr [rbx+RAW+8], OFFSET RAW_CFLAG_ON_IMM32
        and     dword ptr [rbx+RAW+12], ~RAW_LFLAG_OFF    # c_lflag
        mov     byte ptr [rbx+RAW+VMIN_AT], 1
        mov     byte ptr [rbx+RAW+VTIME_AT], 0
        xor     edi, edi                # arg1: fd 0
        mov     esi, TCSETS             # arg2: (now)
        lea     rdx, [rbx+RAW]          # arg3
        mov     eax, SYS_IOCTL
        syscall
raw_done:

        # 5. Block SIGWINCH, signalfd4 for it -> r13, copy the window size once
        mov     qword ptr [rbx+SIGMASK], 1 << (SIGWINCH - 1)
        xor     edi, edi                # arg1: SIG_BLOCK
        lea     rsi, [rbx+SIGMASK]      # arg2: {SIGWINCH}
        xor     edx, edx                # arg3: oldset = NULL
        mov     r10d, SIGSET_SIZE       # arg4
        mov     eax, SYS_RT_SIGPROCMASK
        syscall
        mov     edi, -1                 # arg1: a new signalfd
        lea     rsi, [rbx+SIGMASK]      # arg2: {SIGWINCH}
        mov     edx, SIGSET_SIZE        # arg3
        mov     r10d, SFD_CLOEXEC       # arg4
        mov     eax, SYS_SIGNALFD4
        syscall
        mov     r13, rax                # -errno: poll skips a negative fd
        call    winsize

        # 6. kill(-pgrp, SIGWINCH) for the master's foreground process group, if it has one
        mov     edi, r12d               # arg1: the master
        mov     esi, TIOCGPGRP          # arg2
        lea     rdx, [rbx+PGRP]         # arg3
        mov     eax, SYS_IOCTL
        syscall
        test    eax, eax
        jne     nudged
        mov     edi, [rbx+PGRP]
        test    edi, edi
        jle     nudged                  # none (0 would mean: ours)
        neg     edi                     # arg1: -pgrp, the whole group
        mov     esi, SIGWINCH           # arg2
        mov     eax, SYS_KILL
        syscall
nudged:

        # 7. The pollfds {0, POLLIN}, {master, POLLIN}, {signalfd, POLLIN} (revents 0); then poll and relay
        {disp8} mov dword ptr [rbx+POLLFDS], 0  # fds[0].fd = 0 ({disp8}: [rbx+0], as first built)
        mov     dword ptr [rbx+POLLFDS+4], POLLIN
        mov     [rbx+POLLFDS+8], r12d   # fds[1].fd = the master
        mov     dword ptr [rbx+POLLFDS+12], POLLIN
        mov     [rbx+POLLFDS+16], r13d  # fds[2].fd = the signalfd
        mov     dword ptr [rbx+POLLFDS+20], POLLIN
loop:
        mov     rdi, rbx                # arg1: the pollfds
        mov     esi, 3                  # arg2: nfds
        mov     edx, -1                 # arg3: no timeout
        mov     eax, SYS_POLL
        syscall
        cmp     rax, -EINTR
        je      loop
        test    rax, rax
        {disp32} js finish              # (never)
        # the master: output of the session
        movzx   eax, word ptr [rbx+POLLFDS+14]  # fds[1].revents
        test    al, POLLIN
        jne     from_master
        test    al, POLLERR_HUP_NVAL
        {disp32} jne finish             # hung up, nothing to read
        jmp     from_pane
from_master:
        copy_chunk "mov edi, r12d", "mov edi, 1"  # from the master to fd 1, the pane
        # fd 0: what the user types in the pane (any revents: POLLHUP, POLLNVAL make read end it)
from_pane:
        cmp     word ptr [rbx+POLLFDS+6], 0  # fds[0].revents
        je      signals
        copy_chunk "xor edi, edi", "mov edi, r12d"  # from fd 0 to the master
        # the signalfd: the pane was resized
signals:
        cmp     word ptr [rbx+POLLFDS+22], 0  # fds[2].revents
        {disp32} je loop
        mov     edi, r13d               # arg1: the signalfd
        mov     rsi, r15                # arg2: the buffer
        mov     edx, SIGINFO_SIZE       # arg3
        xor     eax, eax                # SYS_READ
        syscall
        call    winsize
        jmp     loop

        # 8. Restore fd 0's settings (if we changed them) and exit_group(0)
finish:
        test    r14, r14
        jne     done                    # TCGETS failed: nothing to restore
        xor     edi, edi                # arg1: fd 0
        mov     esi, TCSETS             # arg2
        lea     rdx, [rbx+SAVED]        # arg3
        mov     eax, SYS_IOCTL
        syscall
done:
        xor     edi, edi                # status 0
        jmp     exit

        exits_and_parse

# write_all: write(edi, rsi, rdx) until all is written; waits in poll while the fd is full (a
# non-blocking master says EAGAIN); an error ends the relay. Keeps rbx, r12-r15.
write_all:
        mov     eax, SYS_WRITE
        syscall                         # rdi, rsi, rdx survive
        cmp     rax, -EINTR
        je      write_all
        cmp     rax, -EAGAIN
        je      wait_writable
        test    rax, rax
        {disp32} jle finish             # EIO, EPIPE: the end
        add     rsi, rax                # past what was written
        sub     rdx, rax                # what is left
        jne     write_all
        ret
wait_writable:
        mov     [rbx+OUT_POLLFD], edi   # pollfd.fd
        mov     dword ptr [rbx+OUT_POLLFD+4], POLLOUT  # .events = POLLOUT, .revents = 0
        push    rdi                     # the write, kept
        push    rsi
        push    rdx
        lea     rdi, [rbx+OUT_POLLFD]   # arg1: &pollfd
        mov     esi, 1                  # arg2: nfds
        mov     edx, -1                 # arg3: no timeout
        mov     eax, SYS_POLL           # (its result: the next write tells)
        syscall
        pop     rdx
        pop     rsi
        pop     rdi
        jmp     write_all

# winsize: TIOCGWINSZ on fd 0, TIOCSWINSZ on the master (nothing if fd 0 is no terminal)
winsize:
        xor     edi, edi                # arg1: fd 0
        mov     esi, TIOCGWINSZ         # arg2
        lea     rdx, [rbx+WINSIZE]      # arg3
        mov     eax, SYS_IOCTL
        syscall
        test    eax, eax
        jne     winsize_done
        mov     edi, r12d               # arg1: the master
        mov     esi, TIOCSWINSZ         # arg2: the kernel signals the job
        lea     rdx, [rbx+WINSIZE]      # arg3
        mov     eax, SYS_IOCTL
        syscall
winsize_done:
        ret

name:
        .asciz  "reptyr-relay"          # read-only, in the code segment

        # Two of cfmakeraw's masks under names defined only here, after their use, on purpose: an
        # immediate that gas cannot evaluate yet gets 4 bytes (opcode 0x81), as when this program was
        # first built, where one sign-extended byte (0x83) would do.
        .equ    RAW_OFLAG_OFF_IMM32, RAW_OFLAG_OFF
        .equ    RAW_CFLAG_ON_IMM32, RAW_CFLAG_ON
