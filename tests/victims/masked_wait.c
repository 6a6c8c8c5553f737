/* Test victim: waits in a call with a temporary signal mask that holds SIGUSR1 off (its own mask does
 * not), as a program that takes signals only between waits does. It reports how the wait ended and when
 * the handler ran, in ms since the wait began. Usage: masked_wait ppoll|pselect|epoll_pwait|sigsuspend SECONDS */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

static struct timespec began;
static volatile long handled_at = -1;

static long ms_since_began(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - began.tv_sec) * 1000 + (now.tv_nsec - began.tv_nsec) / 1000000;
}

static void on_usr1(int signum) { (void)signum; handled_at = ms_since_began(); }
static void on_alrm(int signum) { (void)signum; }

int main(int argc, char **argv) {
    const char *call = argc > 1 ? argv[1] : "ppoll";
    int seconds = argc > 2 ? atoi(argv[2]) : 4;
    struct sigaction action = {0};
    action.sa_handler = on_usr1;
    sigaction(SIGUSR1, &action, NULL);
    action.sa_handler = on_alrm;
    sigaction(SIGALRM, &action, NULL);
    sigset_t during;  /* the call's own mask: everything its caller allows, but SIGUSR1 */
    sigprocmask(SIG_SETMASK, NULL, &during);
    sigaddset(&during, SIGUSR1);
    int epoll = epoll_create1(0);
    printf("ready %d\n", getpid());
    fflush(stdout);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &began);
        handled_at = -1;
        struct timespec timeout = {seconds, 0};
        int result;
        if (!strcmp(call, "pselect")) {
            result = pselect(0, NULL, NULL, NULL, &timeout, &during);
        } else if (!strcmp(call, "epoll_pwait")) {
            result = epoll_pwait(epoll, (struct epoll_event[1]){0}, 1, seconds * 1000, &during);
        } else if (!strcmp(call, "sigsuspend")) {
            alarm(seconds);  /* SIGALRM ends it; SIGUSR1 must wait until it has */
            result = sigsuspend(&during);
        } else {
            result = ppoll(NULL, 0, &timeout, &during);
        }
        int error = errno;
        long ended = ms_since_began();
        /* The caller's mask is back: a SIGUSR1 held off by the call is delivered now. */
        printf("%s returned %d (%s) after %ld ms; SIGUSR1 handled at %ld ms\n", call, result,
               result < 0 ? strerror(error) : "ok", ended, handled_at);
        fflush(stdout);
    }
}
