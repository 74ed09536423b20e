// dkexec: runs a conformance script as the recorded command and writes the ground truth itself.
//
//   dkexec run ROOT SCRIPT TRUTH [--per-op]   execute SCRIPT under ROOT; snapshots go to TRUTH (outside ROOT)
//   dkexec snap DIR OUT                        write the snapshot of DIR to OUT (the same format, for exports)
//
// Every path is resolved component by component with openat(O_PATH|O_NOFOLLOW), so paths longer than PATH_MAX
// work, and names are raw bytes (invalid UTF-8, spaces, newlines). Script and snapshot tokens are %XX-escaped.
//
// Script lines (one operation each, tokens separated by one space):
//   mkdir P MODE | mkdirp P | create P MODE | write P OFF LEN SEED | append P LEN SEED | trunc P SIZE
//   punch P OFF LEN | rename A B | exchange A B | unlink P | rmdir P | rmr P | chmod P MODE | fchmod P MODE
//   writechmod P OFF LEN SEED MODE | symlink TARGET P | link A B | gap MS | hist H (the history the next ops are in)
//   writev P OFF LEN SEED (pwritev of three vectors at OFF; OFF -1: writev to the end, O_APPEND)
//   copyrange A B OFF LEN [FROM] (copy_file_range of A's LEN bytes from FROM (default 0) to B at OFF; with FROM, by
//   the two files' positions, offset pointers NULL) | sendfile A B OFF LEN [FROM] (the same by sendfile, written at B's
//   position OFF; with FROM, read from A's position) | falloc P OFF LEN (fallocate mode 0: allocates, may extend the size)
// The last four change bytes without a write(2) buffer the eBPF record could carry: its record says where they came
// from (the copies) or the recorder reads them back.
// A failed operation is reported on stderr and skipped: the snapshots say what really happened.
//
// TRUTH/gaps.txt: "K START_NS END_NS" (CLOCK_REALTIME) per quiet gap; TRUTH/gap-K.txt: the tree during gap K.
// With --per-op, after operation N (1-based, across the script) TRUTH/op-N.txt holds the tree of that
// operation's history directory, and ROOT/.m/N is created: the capture's event for it marks "after op N".
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif
#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif

static int root_fd;

static void unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = 0;
}

static void put_escaped(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '%') fprintf(f, "%%%02X", *p);
        else fputc(*p, f);
    }
}

// Opens the directory holding the last component of path (relative to root_fd) and returns its name.
static int parent_of(const char *path, const char **base)
{
    int fd = dup(root_fd);
    const char *start = path;
    for (;;) {
        const char *slash = strchr(start, '/');
        if (!slash) break;
        size_t n = (size_t)(slash - start);
        char comp[256];
        if (n == 0 || n >= sizeof comp) { start = slash + 1; continue; }
        memcpy(comp, start, n);
        comp[n] = 0;
        int next = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        close(fd);
        if (next < 0) { errno = e; return -1; }
        fd = next;
        start = slash + 1;
    }
    *base = start;
    return fd;
}

static uint8_t byte_at(long seed, long pos) { return (uint8_t)((seed * 131 + pos * 7 + (pos >> 8) * 13) | 1); }

static int pwrite_pattern(int fd, long off, long len, long seed)
{
    char buf[65536];
    long done = 0;
    while (done < len) {
        long n = len - done < (long)sizeof buf ? len - done : (long)sizeof buf;
        for (long i = 0; i < n; i++) buf[i] = (char)byte_at(seed, off + done + i);
        ssize_t w = off < 0 ? write(fd, buf, (size_t)n) : pwrite(fd, buf, (size_t)n, off + done);
        if (w < 0) return -1;
        done += w;
    }
    return 0;
}

static int open_file(const char *path, int flags, mode_t mode)
{
    const char *base;
    int d = parent_of(path, &base);
    if (d < 0) return -1;
    int fd = openat(d, base, flags | O_CLOEXEC | O_NOFOLLOW, mode);
    int e = errno;
    close(d);
    errno = e;
    return fd;
}

// LEN bytes of the pattern in one vectored call of three unequal vectors (short writes continued by plain ones).
static int pwritev_pattern(int fd, long off, long len, long seed)
{
    char *buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf) return -1;
    for (long i = 0; i < len; i++) buf[i] = (char)byte_at(seed, (off < 0 ? 0 : off) + i);
    long a = len / 3, b = len / 2;
    struct iovec iov[3] = {{buf, (size_t)a}, {buf + a, (size_t)(b - a)}, {buf + b, (size_t)(len - b)}};
    ssize_t w = off < 0 ? writev(fd, iov, 3) : pwritev(fd, iov, 3, off);
    int r = 0;
    if (w < 0) r = -1;
    else if (w < len) r = off < 0 ? (write(fd, buf + w, (size_t)(len - w)) < 0 ? -1 : 0) : pwrite_pattern(fd, off + w, len - w, seed);
    int e = errno;
    free(buf);
    errno = e;
    return r;
}

// copy_file_range or sendfile of FROM's LEN bytes at SRC into TO at OFF, until done or FROM ends. by_position: the
// calls' offset pointers are NULL and the files' positions (set first) move instead.
static int copy_between(const char *from, const char *to, long off, long len, long src, int by_position, int use_sendfile)
{
    int in = open_file(from, O_RDONLY, 0);
    if (in < 0) return -1;
    int out = open_file(to, O_WRONLY | O_CREAT, 0644);
    if (out < 0) { int e = errno; close(in); errno = e; return -1; }
    int r = 0;
    loff_t in_off = src, out_off = off;
    if ((use_sendfile || by_position) && lseek(out, off, SEEK_SET) < 0) r = -1;
    if (by_position && lseek(in, src, SEEK_SET) < 0) r = -1;
    while (r == 0 && len > 0) {
        ssize_t n = use_sendfile ? sendfile(out, in, by_position ? NULL : &in_off, (size_t)len)
                                 : copy_file_range(in, by_position ? NULL : &in_off, out, by_position ? NULL : &out_off, (size_t)len, 0);
        if (n < 0) r = -1;
        if (n <= 0) break;
        len -= n;
    }
    int e = errno;
    close(in);
    close(out);
    errno = e;
    return r;
}

static int rm_tree(int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) return -1;
    if (!S_ISDIR(st.st_mode)) return unlinkat(dirfd, name, 0);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    DIR *dir = fdopendir(fd);
    struct dirent *de;
    while ((de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        rm_tree(fd, de->d_name);
    }
    closedir(dir);
    return unlinkat(dirfd, name, AT_REMOVEDIR);
}

// ---- snapshot ----

typedef struct { char *path; char *line; dev_t dev; ino_t ino; int nlink; } entry_t;
static entry_t *entries;
static size_t n_entries, cap_entries;

static char *escaped(const char *s)
{
    char *buf;
    size_t len;
    FILE *f = open_memstream(&buf, &len);
    put_escaped(f, s);
    fclose(f);
    return buf;
}

static void add_entry(const char *path, const char *line, const struct stat *st)
{
    if (n_entries == cap_entries) {
        cap_entries = cap_entries ? cap_entries * 2 : 256;
        entries = realloc(entries, cap_entries * sizeof *entries);
    }
    entries[n_entries++] = (entry_t){escaped(path), strdup(line), st->st_dev, st->st_ino, (int)st->st_nlink};
}

static void describe_file(int fd, const struct stat *st, char *out, size_t outsz)
{
    // FNV-1a 64 of the bytes, and the data extents (SEEK_DATA/SEEK_HOLE) rounded out to 4 KiB.
    uint64_t h = 1469598103934665603ULL;
    char buf[65536];
    ssize_t n;
    off_t pos = 0;
    while ((n = pread(fd, buf, sizeof buf, pos)) > 0) {
        for (ssize_t i = 0; i < n; i++) { h ^= (uint8_t)buf[i]; h *= 1099511628211ULL; }
        pos += n;
    }
    int w = snprintf(out, outsz, "f %04o %lld %016llx", st->st_mode & 07777, (long long)st->st_size, (unsigned long long)h);
    off_t at = 0;
    int first = 1;
    while (at < st->st_size && w < (int)outsz - 64) {
        off_t data = lseek(fd, at, SEEK_DATA);
        if (data < 0) break;
        off_t hole = lseek(fd, data, SEEK_HOLE);
        if (hole < 0) hole = st->st_size;
        off_t a = data & ~(off_t)4095, b = (hole + 4095) & ~(off_t)4095;
        w += snprintf(out + w, outsz - (size_t)w, "%s%lld-%lld", first ? " data=" : ",", (long long)a, (long long)b);
        first = 0;
        at = hole;
    }
    if (first) snprintf(out + w, outsz - (size_t)w, " data=");
}

static void walk(int dfd, const char *prefix)
{
    DIR *dir = fdopendir(dfd);
    if (!dir) return;
    struct dirent *de;
    char **names = NULL;
    size_t nn = 0;
    while ((de = readdir(dir))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (!*prefix && !strcmp(de->d_name, ".m")) continue; // per-op markers
        names = realloc(names, (nn + 1) * sizeof *names);
        names[nn++] = strdup(de->d_name);
    }
    for (size_t i = 0; i < nn; i++) {
        size_t plen = strlen(prefix) + strlen(names[i]) + 2;
        char *path = malloc(plen);
        snprintf(path, plen, "%s%s%s", prefix, *prefix ? "/" : "", names[i]);
        struct stat st;
        char line[8192];
        if (fstatat(dirfd(dir), names[i], &st, AT_SYMLINK_NOFOLLOW) == 0) {
            if (S_ISDIR(st.st_mode)) {
                snprintf(line, sizeof line, "d %04o", st.st_mode & 07777);
                add_entry(path, line, &st);
                int sub = openat(dirfd(dir), names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub >= 0) walk(sub, path);
            } else if (S_ISLNK(st.st_mode)) {
                char target[4096];
                ssize_t n = readlinkat(dirfd(dir), names[i], target, sizeof target - 1);
                target[n < 0 ? 0 : n] = 0;
                char *t = escaped(target);
                snprintf(line, sizeof line, "l %s", t);
                free(t);
                add_entry(path, line, &st);
            } else if (S_ISREG(st.st_mode)) {
                int fd = openat(dirfd(dir), names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
                if (fd >= 0) { describe_file(fd, &st, line, sizeof line); close(fd); }
                else snprintf(line, sizeof line, "f unreadable errno=%d", errno);
                add_entry(path, line, &st);
            } else {
                snprintf(line, sizeof line, "? %o", st.st_mode);
                add_entry(path, line, &st);
            }
        }
        free(path);
        free(names[i]);
    }
    free(names);
    closedir(dir);
}

static int cmp_entry(const void *a, const void *b) { return strcmp(((const entry_t *)a)->path, ((const entry_t *)b)->path); }

// One line per entry, sorted: "PATH KIND ...", files with " link=FIRST" when they share an inode with another
// entry of the snapshot (FIRST: the group's first path in sorted order).
static void snapshot(int dirfd, const char *prefix_dir, const char *out)
{
    n_entries = 0;
    int fd = prefix_dir ? openat(dirfd, prefix_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                        : openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) walk(fd, "");
    qsort(entries, n_entries, sizeof *entries, cmp_entry);
    FILE *f = fopen(out, "w");
    for (size_t i = 0; i < n_entries; i++) {
        fprintf(f, "%s %s", entries[i].path, entries[i].line);
        if (entries[i].line[0] == 'f' && entries[i].nlink > 1) {
            for (size_t j = 0; j < n_entries; j++) {
                if (entries[j].dev == entries[i].dev && entries[j].ino == entries[i].ino) {
                    fprintf(f, " link=%s", entries[j].path);
                    break;
                }
            }
        }
        fputc('\n', f);
    }
    for (size_t i = 0; i < n_entries; i++) {
        free(entries[i].path);
        free(entries[i].line);
    }
    fclose(f);
}

// ---- run ----

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int run_op(int argc, char **a)
{
    const char *base;
    int d, fd, r, e;
    const char *op = a[0];
    if (!strcmp(op, "mkdir")) {
        if ((d = parent_of(a[1], &base)) < 0) return -1;
        r = mkdirat(d, base, (mode_t)strtol(a[2], NULL, 8));
    } else if (!strcmp(op, "mkdirp")) {
        // mkdir -p through the *at calls, one component at a time.
        int cur = dup(root_fd);
        char *p = a[1], *slash;
        r = 0;
        for (;;) {
            slash = strchr(p, '/');
            if (slash) *slash = 0;
            if (*p) {
                mkdirat(cur, p, 0755);
                int next = openat(cur, p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                close(cur);
                if (next < 0) return -1;
                cur = next;
            }
            if (!slash) break;
            *slash = '/';
            p = slash + 1;
        }
        close(cur);
        return r;
    } else if (!strcmp(op, "create")) {
        fd = open_file(a[1], O_WRONLY | O_CREAT | O_EXCL, (mode_t)strtol(a[2], NULL, 8));
        if (fd < 0) return -1;
        return close(fd);
    } else if (!strcmp(op, "write") || !strcmp(op, "writechmod")) {
        if ((fd = open_file(a[1], O_WRONLY | O_CREAT, 0644)) < 0) return -1;
        r = pwrite_pattern(fd, atol(a[2]), atol(a[3]), atol(a[4]));
        if (r == 0 && argc > 5) r = fchmod(fd, (mode_t)strtol(a[5], NULL, 8));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "append")) {
        if ((fd = open_file(a[1], O_WRONLY | O_CREAT | O_APPEND, 0644)) < 0) return -1;
        r = pwrite_pattern(fd, -1, atol(a[2]), atol(a[3]));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "trunc")) {
        if ((fd = open_file(a[1], O_WRONLY, 0)) < 0) return -1;
        r = ftruncate(fd, atol(a[2]));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "writev")) {
        long off = atol(a[2]);
        if ((fd = open_file(a[1], O_WRONLY | O_CREAT | (off < 0 ? O_APPEND : 0), 0644)) < 0) return -1;
        r = pwritev_pattern(fd, off, atol(a[3]), atol(a[4]));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "copyrange") || !strcmp(op, "sendfile")) {
        return copy_between(a[1], a[2], atol(a[3]), atol(a[4]), argc > 5 ? atol(a[5]) : 0, argc > 5, !strcmp(op, "sendfile"));
    } else if (!strcmp(op, "falloc")) {
        if ((fd = open_file(a[1], O_WRONLY, 0)) < 0) return -1;
        r = fallocate(fd, 0, atol(a[2]), atol(a[3]));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "punch")) {
        if ((fd = open_file(a[1], O_WRONLY, 0)) < 0) return -1;
        r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, atol(a[2]), atol(a[3]));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "rename") || !strcmp(op, "exchange") || !strcmp(op, "link")) {
        const char *b2;
        int d1 = parent_of(a[1], &base);
        if (d1 < 0) return -1;
        int d2 = parent_of(a[2], &b2);
        if (d2 < 0) { close(d1); return -1; }
        if (!strcmp(op, "link")) r = linkat(d1, base, d2, b2, 0);
        else r = (int)syscall(SYS_renameat2, d1, base, d2, b2, !strcmp(op, "exchange") ? RENAME_EXCHANGE : 0);
        e = errno;
        close(d1);
        close(d2);
        errno = e;
        return r;
    } else if (!strcmp(op, "unlink") || !strcmp(op, "rmdir") || !strcmp(op, "rmr")) {
        if ((d = parent_of(a[1], &base)) < 0) return -1;
        r = !strcmp(op, "rmr") ? rm_tree(d, base) : unlinkat(d, base, !strcmp(op, "rmdir") ? AT_REMOVEDIR : 0);
    } else if (!strcmp(op, "chmod")) {
        if ((d = parent_of(a[1], &base)) < 0) return -1;
        r = fchmodat(d, base, (mode_t)strtol(a[2], NULL, 8), 0);
    } else if (!strcmp(op, "fchmod")) {
        if ((fd = open_file(a[1], O_RDONLY, 0)) < 0) return -1;
        r = fchmod(fd, (mode_t)strtol(a[2], NULL, 8));
        e = errno;
        close(fd);
        errno = e;
        return r;
    } else if (!strcmp(op, "symlink")) {
        if ((d = parent_of(a[2], &base)) < 0) return -1;
        r = symlinkat(a[1], d, base);
    } else {
        errno = EINVAL;
        return -1;
    }
    e = errno;
    close(d);
    errno = e;
    return r;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "snap")) {
        root_fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (root_fd < 0) { perror(argv[2]); return 2; }
        snapshot(root_fd, NULL, argv[3]);
        return 0;
    }
    if (argc < 5 || strcmp(argv[1], "run")) {
        fprintf(stderr, "usage: dkexec run ROOT SCRIPT TRUTH [--per-op] | dkexec snap DIR OUT\n");
        return 2;
    }
    int per_op = argc > 5 && !strcmp(argv[5], "--per-op");
    root_fd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FILE *script = fopen(argv[3], "r");
    if (root_fd < 0 || !script) { perror("open"); return 2; }
    char path[4096];
    snprintf(path, sizeof path, "%s/gaps.txt", argv[4]);
    FILE *gaps = fopen(path, "w");
    int marks = -1;
    if (per_op) {
        mkdirat(root_fd, ".m", 0755);
        marks = openat(root_fd, ".m", O_PATH | O_DIRECTORY | O_CLOEXEC);
    }
    char hist[256] = "";
    char *line = NULL;
    size_t cap = 0;
    long nop = 0, ngap = 0;
    while (getline(&line, &cap, script) > 0) {
        line[strcspn(line, "\n")] = 0;
        char *a[8];
        int n = 0;
        for (char *tok = strtok(line, " "); tok && n < 8; tok = strtok(NULL, " ")) { unescape(tok); a[n++] = tok; }
        if (n == 0) continue;
        if (!strcmp(a[0], "hist")) { snprintf(hist, sizeof hist, "%s", a[1]); continue; }
        if (!strcmp(a[0], "gap")) {
            long long start = now_ns();
            snprintf(path, sizeof path, "%s/gap-%ld.txt", argv[4], ++ngap);
            snapshot(root_fd, NULL, path);
            long long until = start + atol(a[1]) * 1000000LL;
            while (now_ns() < until) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
            fprintf(gaps, "%ld %lld %lld\n", ngap, start, now_ns());
            fflush(gaps);
            continue;
        }
        if (run_op(n, a) < 0) fprintf(stderr, "dkexec: %s %s: %s\n", a[0], n > 1 ? a[1] : "", strerror(errno));
        if (per_op) {
            ++nop;
            snprintf(path, sizeof path, "%s/op-%ld.txt", argv[4], nop);
            snapshot(root_fd, hist, path);
            char name[32];
            snprintf(name, sizeof name, "%ld", nop);
            int fd = openat(marks, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd >= 0) close(fd);
        }
    }
    fclose(gaps);
    return 0;
}
