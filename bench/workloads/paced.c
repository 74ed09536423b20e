/* paced DIR RATE SECONDS: append 16-byte records to DIR/paced.bin at RATE writes a second for SECONDS seconds,
 * in slices of 1 ms (RATE/1000 writes, then sleep to the next millisecond). The capture backends benchmark's
 * sustained-rate workload: it checks that a backend loses nothing at a steady rate, not how fast it is. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR RATE SECONDS\n", argv[0]);
        return 2;
    }
    long rate = strtol(argv[2], NULL, 10), seconds = strtol(argv[3], NULL, 10);
    char path[4096];
    snprintf(path, sizeof path, "%s/paced.bin", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    long per_slice = rate / 1000, written = 0, late = 0;
    char buf[16];
    for (long slice = 0; slice < seconds * 1000; slice++) {
        for (long i = 0; i < per_slice; i++, written++) {
            snprintf(buf, sizeof buf, "%015ld", written);
            buf[15] = '\n';
            if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
                fprintf(stderr, "write %s: %s\n", path, strerror(errno));
                return 1;
            }
        }
        next.tv_nsec += 1000000;
        if (next.tv_nsec >= 1000000000) {
            next.tv_sec++;
            next.tv_nsec -= 1000000000;
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
            late++;
        else
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
    }
    close(fd);
    fprintf(stderr, "paced: %ld writes in %ld s, %ld of %ld slices late\n", written, seconds, late, seconds * 1000);
    return 0;
}
