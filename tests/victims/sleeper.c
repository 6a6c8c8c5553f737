/* One relative nanosleep of argv[1] seconds, then how long it really took (CLOCK_MONOTONIC): a call
 * restarted from scratch after a move would sleep its whole interval again. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    struct timespec interval = {argc > 1 ? atoi(argv[1]) : 4, 0};
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    double start = now();
    int result = nanosleep(&interval, NULL);
    printf("slept %.2f s, result %d errno %d\n", now() - start, result, result ? errno : 0);
    fflush(stdout);
    pause();  /* stays until the test ends it */
    return 0;
}
