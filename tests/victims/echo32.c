/* 32-bit test victim: echoes lines from stdin; with "sleep" it naps in nanosleep between words. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char line[256];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
        for (;;) {
            struct timespec t = {0, 700000000};
            if (nanosleep(&t, NULL) != 0) printf("nanosleep failed: errno %d\n", errno);
            else printf("woke\n");
            fflush(stdout);
        }
    }
    while (fgets(line, sizeof line, stdin)) {
        printf("got: %s", line);
        fflush(stdout);
    }
    printf("eof errno %d\n", errno);
    return 0;
}
