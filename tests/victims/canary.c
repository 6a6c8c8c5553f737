/* Register canary: blocks in read(0) with known values in every register a syscall must preserve,
 * then checks them. Any register we failed to give back after injecting syscalls shows up here. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static long canary_read(char *buf, long size, long *seen) {
    long ret;
    __asm__ volatile(
        "mov $0x1111111111111111, %%rbx\n\t"
        "mov $0x2222222222222222, %%r8\n\t"
        "mov $0x3333333333333333, %%r9\n\t"
        "mov $0x4444444444444444, %%r10\n\t"
        "mov $0x5555555555555555, %%r12\n\t"
        "mov $0x6666666666666666, %%r13\n\t"
        "mov $0x7777777777777777, %%r14\n\t"
        "mov $0x0123456789abcdef, %%r15\n\t"
        "syscall\n\t"
        "mov %%rbx, 0(%[seen])\n\t"
        "mov %%r8, 8(%[seen])\n\t"
        "mov %%r9, 16(%[seen])\n\t"
        "mov %%r10, 24(%[seen])\n\t"
        "mov %%r12, 32(%[seen])\n\t"
        "mov %%r13, 40(%[seen])\n\t"
        "mov %%r14, 48(%[seen])\n\t"
        "mov %%r15, 56(%[seen])\n\t"
        : "=a"(ret)
        : "a"(0L), "D"(0L), "S"(buf), "d"(size), [seen] "r"(seen)
        : "rbx", "rcx", "r11", "r8", "r9", "r10", "r12", "r13", "r14", "r15", "memory");
    return ret;
}

int main(void) {
    static const long want[8] = {0x1111111111111111, 0x2222222222222222, 0x3333333333333333,
                                 0x4444444444444444, 0x5555555555555555, 0x6666666666666666,
                                 0x7777777777777777, 0x0123456789abcdef};
    char buf[256];
    long seen[8];
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;) {
        long n = canary_read(buf, sizeof buf - 1, seen);
        if (n <= 0) return 0;
        buf[n] = 0;
        printf("got: %s canary %s\n", strtok(buf, "\r\n"), memcmp(seen, want, sizeof want) ? "BAD" : "ok");
        fflush(stdout);
    }
}
