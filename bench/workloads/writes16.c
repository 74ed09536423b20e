/* writes16 DIR [N]: open DIR/small-writes.bin once and write N (default 1000000) records of 16 bytes, one
 * write() each, then close. The capture backends benchmark's per-syscall workload. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [N]\n", argv[0]);
        return 2;
    }
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 1000000;
    char path[4096];
    snprintf(path, sizeof path, "%s/small-writes.bin", argv[1]);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char buf[16];
    for (long i = 0; i < n; i++) {
        snprintf(buf, sizeof buf, "%015ld", i);
        buf[15] = '\n';
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
            fprintf(stderr, "write %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    return close(fd) == 0 ? 0 : 1;
}
