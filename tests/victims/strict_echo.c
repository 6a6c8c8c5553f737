/* A program under seccomp's strict mode: from the prctl on, only read, write, exit and sigreturn are
 * allowed, and any other syscall (an ioctl, a dup2 that ptrace makes it run) kills it with SIGKILL.
 * It echoes its input back as "got: ..." until end of input. */
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    char buf[256];
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT) != 0)
        return 1;
    write(1, "ready\n", 6);
    for (;;) {
        long n = read(0, buf, sizeof buf);
        if (n <= 0)
            syscall(SYS_exit, 0);  /* exit_group, what exit() makes, is not allowed */
        write(1, "got: ", 5);
        write(1, buf, n);
    }
}
