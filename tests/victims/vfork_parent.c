/* Test victim: vforks a child that never execs, so the parent sleeps in state D (uninterruptible) for as
 * long as the child lives; the child dies with its parent (PR_SET_PDEATHSIG). */
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(void) {
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (vfork() == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) pause();
    }
    return 0;
}
