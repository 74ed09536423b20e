/* creates DIR [N]: create N (default 20000) files of 100 bytes in DIR,
 * each with open/write/close. Used as the bare workload for the recording
 * overhead benchmark; kept minimal so the recorder's cost is what shows. */
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
    long n = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
    char buf[100];
    char path[4096];
    for (long i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, "file %ld ", i);
        memset(buf + len, 'x', sizeof buf - len - 1);
        buf[sizeof buf - 1] = '\n';
        snprintf(path, sizeof path, "%s/f%06ld.txt", dir, i);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) {
            fprintf(stderr, "open %s: %s\n", path, strerror(errno));
            return 1;
        }
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) {
            fprintf(stderr, "write %s: %s\n", path, strerror(errno));
            return 1;
        }
        if (close(fd) != 0) {
            fprintf(stderr, "close %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    return 0;
}
