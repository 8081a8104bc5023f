/* probe: shows the sandbox what a job sees and does what a test asks, driven by its arguments:
 *   probe [--sleep-ms N] [--write-mib N] [--stderr-kib N] [--exit N] [args...]
 * Prints "argc=N", then "argv[i]=..." for every argument and "env:K=V" for every environment
 * variable, in order. Then: sleeps N ms (WASI poll_oneoff), writes N MiB of 'x' to stdout in
 * 64 KiB writes, writes N KiB of 'e' to stderr, and exits with status N (default 0). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w <= 0) exit(3);
        buf += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv) {
    long sleep_ms = 0, write_mib = 0, stderr_kib = 0;
    int code = 0;
    printf("argc=%d\n", argc);
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; e && *e; e++) printf("env:%s\n", *e);
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--sleep-ms")) sleep_ms = atol(argv[++i]);
        else if (!strcmp(argv[i], "--write-mib")) write_mib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--stderr-kib")) stderr_kib = atol(argv[++i]);
        else if (!strcmp(argv[i], "--exit")) code = atoi(argv[++i]);
    }
    fflush(stdout);
    if (sleep_ms > 0) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        printf("slept %ld ms\n", sleep_ms);
        fflush(stdout);
    }
    static char chunk[65536];
    if (write_mib > 0) {
        memset(chunk, 'x', sizeof chunk);
        for (long i = 0; i < write_mib * 16; i++) write_all(1, chunk, sizeof chunk);
    }
    if (stderr_kib > 0) {
        memset(chunk, 'e', 1024);
        for (long i = 0; i < stderr_kib; i++) write_all(2, chunk, 1024);
    }
    return code;
}
