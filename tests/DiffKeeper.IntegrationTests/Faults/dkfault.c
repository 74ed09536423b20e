// dkfault: a fault-injecting file layer for the published diffkeeper binary, loaded with LD_PRELOAD (the NativeAOT
// executable and the system libsqlite3 it dlopens both call libc's write and sync functions through the dynamic
// linker, so this layer sits under the pack writer and the catalog alike, with no change to either).
//
// Only calls on file descriptors whose path (/proc/self/fd/N) lies under DK_FAULT_DIR are counted; everything else
// passes straight through. Two counters, numbered from 1 in call order:
//   write calls: write, pwrite, pwrite64, writev, pwritev, pwritev64, ftruncate, ftruncate64, fallocate, fallocate64
//   sync calls:  fsync, fdatasync
// DK_FAULT_KIND and DK_FAULT_AT choose one fault, applied once (the calls after it succeed, as after a transient
// error or once space was freed):
//   enospc K   write call K fails with ENOSPC, nothing written
//   eio K      write call K fails with EIO, nothing written
//   short K    write call K writes the first half of its bytes and returns that count (a size change is not
//              shortened: the call then succeeds, and the log says so)
//   fsync K    sync call K fails with EIO (the data stays in the page cache, as after a real failed fsync)
// DK_FAULT_ARM, when set, names a file: no call is counted before it exists (a test aims at what the store writes
// after the recorded command made it, such as the session's end).
// DK_FAULT_LOG names a file that gets one line per counted call when DK_FAULT_TRACE=1 (the counting run), and
// always the line of the call that was faulted: "<class> <n> <function> <bytes> <path> [FAULT <kind>]".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum fault_kind { NONE, ENOSPC_FAULT, EIO_FAULT, SHORT_FAULT, FSYNC_FAULT };

static char dir[4096];
static size_t dir_len;
static enum fault_kind kind = NONE;
static long fault_at;
static int trace_all;
static int log_fd = -1;
static long write_calls, sync_calls;
static char arm[4096];
static int armed = 1;

__attribute__((constructor)) static void init(void)
{
    const char *d = getenv("DK_FAULT_DIR");
    if (d == NULL || d[0] != '/' || strlen(d) >= sizeof dir - 1)
        return;
    strcpy(dir, d);
    dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir[--dir_len] = 0;
    const char *k = getenv("DK_FAULT_KIND");
    const char *at = getenv("DK_FAULT_AT");
    if (k != NULL && at != NULL) {
        fault_at = atol(at);
        kind = strcmp(k, "enospc") == 0 ? ENOSPC_FAULT
             : strcmp(k, "eio") == 0    ? EIO_FAULT
             : strcmp(k, "short") == 0  ? SHORT_FAULT
             : strcmp(k, "fsync") == 0  ? FSYNC_FAULT
                                        : NONE;
    }
    const char *a = getenv("DK_FAULT_ARM");
    if (a != NULL && a[0] != 0 && strlen(a) < sizeof arm) {
        strcpy(arm, a);
        armed = 0;
    }
    const char *t = getenv("DK_FAULT_TRACE");
    trace_all = t != NULL && strcmp(t, "1") == 0;
    const char *l = getenv("DK_FAULT_LOG");
    if (l != NULL)
        log_fd = (int)syscall(SYS_openat, AT_FDCWD, l, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
}

// The path of fd if it lies under DK_FAULT_DIR, else NULL. buf holds it.
static const char *watched(int fd, char *buf, size_t size)
{
    if (dir_len == 0)
        return NULL;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, size - 1);
    if (n < 0)
        return NULL;
    buf[n] = 0;
    if (!__atomic_load_n(&armed, __ATOMIC_SEQ_CST)) {
        if (syscall(SYS_access, arm, F_OK) != 0)
            return NULL;
        __atomic_store_n(&armed, 1, __ATOMIC_SEQ_CST);
    }
    if ((size_t)n < dir_len || memcmp(buf, dir, dir_len) != 0 || (buf[dir_len] != '/' && buf[dir_len] != 0))
        return NULL;
    return buf;
}

static void log_call(const char *cls, long n, const char *fn, long long bytes, const char *path, const char *fault)
{
    if (log_fd < 0 || (!trace_all && fault == NULL))
        return;
    char line[4600];
    int len = snprintf(line, sizeof line, "%s %ld %s %lld %s%s%s\n", cls, n, fn, bytes, path, fault ? " FAULT " : "", fault ? fault : "");
    if (len > 0)
        syscall(SYS_write, log_fd, line, (size_t)(len < (int)sizeof line ? len : (int)sizeof line - 1));
}

// What write call n on fd does: 0 pass, -1 fail with *err, 1 shorten.
static int on_write(int fd, const char *fn, long long bytes, int can_shorten, int *err)
{
    char path[4096];
    if (watched(fd, path, sizeof path) == NULL)
        return 0;
    long n = __atomic_add_fetch(&write_calls, 1, __ATOMIC_SEQ_CST);
    if (n != fault_at || kind == NONE || kind == FSYNC_FAULT) {
        log_call("write", n, fn, bytes, path, NULL);
        return 0;
    }
    if (kind == SHORT_FAULT) {
        if (!can_shorten || bytes < 2) {
            log_call("write", n, fn, bytes, path, "short-not-applicable");
            return 0;
        }
        log_call("write", n, fn, bytes, path, "short");
        return 1;
    }
    *err = kind == ENOSPC_FAULT ? ENOSPC : EIO;
    log_call("write", n, fn, bytes, path, kind == ENOSPC_FAULT ? "enospc" : "eio");
    return -1;
}

static int on_sync(int fd, const char *fn)
{
    char path[4096];
    if (watched(fd, path, sizeof path) == NULL)
        return 0;
    long n = __atomic_add_fetch(&sync_calls, 1, __ATOMIC_SEQ_CST);
    if (n != fault_at || kind != FSYNC_FAULT) {
        log_call("sync", n, fn, 0, path, NULL);
        return 0;
    }
    log_call("sync", n, fn, 0, path, "fsync-eio");
    return -1;
}

static long long iov_bytes(const struct iovec *iov, int cnt)
{
    long long total = 0;
    for (int i = 0; i < cnt; i++)
        total += (long long)iov[i].iov_len;
    return total;
}

// The first half of an iovec array, in out (at most cnt entries); returns the new count.
static int iov_half(const struct iovec *iov, int cnt, struct iovec *out)
{
    long long left = iov_bytes(iov, cnt) / 2;
    int m = 0;
    for (int i = 0; i < cnt && left > 0; i++) {
        out[m] = iov[i];
        if ((long long)out[m].iov_len > left)
            out[m].iov_len = (size_t)left;
        left -= (long long)out[m].iov_len;
        m++;
    }
    return m;
}

#define FAIL(err) do { errno = (err); return -1; } while (0)

ssize_t write(int fd, const void *buf, size_t count)
{
    int err = 0;
    int r = on_write(fd, "write", (long long)count, 1, &err);
    if (r < 0)
        FAIL(err);
    return syscall(SYS_write, fd, buf, r > 0 ? count / 2 : count);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    int err = 0;
    int r = on_write(fd, "pwrite", (long long)count, 1, &err);
    if (r < 0)
        FAIL(err);
    return syscall(SYS_pwrite64, fd, buf, r > 0 ? count / 2 : count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return pwrite64(fd, buf, count, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    int err = 0;
    int r = on_write(fd, "writev", iov_bytes(iov, iovcnt), 1, &err);
    if (r < 0)
        FAIL(err);
    if (r == 0)
        return syscall(SYS_writev, fd, iov, iovcnt);
    struct iovec half[iovcnt > 0 ? iovcnt : 1];
    return syscall(SYS_writev, fd, half, iov_half(iov, iovcnt, half));
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    int err = 0;
    int r = on_write(fd, "pwritev", iov_bytes(iov, iovcnt), 1, &err);
    if (r < 0)
        FAIL(err);
    // The kernel's pwritev takes the offset as two longs (low, high); on x86-64 the high one is ignored.
    if (r == 0)
        return syscall(SYS_pwritev, fd, iov, iovcnt, (long)offset, 0L);
    struct iovec half[iovcnt > 0 ? iovcnt : 1];
    return syscall(SYS_pwritev, fd, half, iov_half(iov, iovcnt, half), (long)offset, 0L);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    return pwritev64(fd, iov, iovcnt, offset);
}

int ftruncate64(int fd, off_t length)
{
    int err = 0;
    if (on_write(fd, "ftruncate", (long long)length, 0, &err) < 0)
        FAIL(err);
    return (int)syscall(SYS_ftruncate, fd, length);
}

int ftruncate(int fd, off_t length)
{
    return ftruncate64(fd, length);
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
    int err = 0;
    if (on_write(fd, "fallocate", (long long)len, 0, &err) < 0)
        FAIL(err);
    return (int)syscall(SYS_fallocate, fd, mode, offset, len);
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    return fallocate64(fd, mode, offset, len);
}

int fsync(int fd)
{
    if (on_sync(fd, "fsync") < 0)
        FAIL(EIO);
    return (int)syscall(SYS_fsync, fd);
}

int fdatasync(int fd)
{
    if (on_sync(fd, "fdatasync") < 0)
        FAIL(EIO);
    return (int)syscall(SYS_fdatasync, fd);
}
