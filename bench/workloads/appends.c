/* appends DIR [N]: open DIR/log.txt once and append N (default 100000)
 * records of 100 bytes, one write() each, then close. Used as the bare
 * workload for the recording overhead benchmark. */
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
    const char *dir = argv[1];
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 100000;
    char path[4096];
    snprintf(path, sizeof path, "%s/log.txt", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd < 0) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char buf[100];
    for (long i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, "line %ld ", i);
        memset(buf + len, 'y', sizeof buf - len - 1);
        buf[sizeof buf - 1] = '\n';
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
            fprintf(stderr, "write %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    if (close(fd) != 0) {
        fprintf(stderr, "close %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}
