/* Test victim: execs between its 64-bit and its 32-bit static build forever, so an attach meets either
 * architecture, or an exec under way. One image in four naps 0.1-0.3 ms first (a blocked call).
 * Usage: arch_flipper OTHER_BUILD THIS_BUILD [GENERATION]; prints "ready PID" in generation 0 only. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    long generation = argc > 3 ? atol(argv[3]) : 0;
    if (generation == 0) {
        printf("ready %d %d-bit\n", (int)getpid(), (int)(8 * sizeof(void *)));
        fflush(stdout);
    }
    if (generation % 4 == 1) {
        struct timespec nap = {0, 100000 + (generation % 3) * 100000};
        nanosleep(&nap, NULL);
    }
    char next[24];
    snprintf(next, sizeof next, "%ld", generation + 1);
    char *args[] = {argv[1], argv[2], argv[1], next, NULL};
    execv(argv[1], args);
    perror("execv");
    return 1;
}
