using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// The libc calls DiffKeeper needs that .NET does not expose (inotify, *at() calls with O_NOFOLLOW, statx with
/// nanosecond times, flock, kill). Linux x86_64/arm64 only. Every call sets the last P/Invoke error; callers read
/// it with <see cref="Marshal.GetLastPInvokeError"/> right after the call.
/// </summary>
public static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_REMOVEDIR = 0x200;
    public const int AT_EMPTY_PATH = 0x1000;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_NOCTTY = 0x100;
    public const int O_TRUNC = 0x200;
    public const int O_NONBLOCK = 0x800;
    public const int O_DIRECTORY = 0x10000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;

    public const int EINTR = 4;
    public const int ENOENT = 2;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int ENOTDIR = 20;
    public const int ENAMETOOLONG = 36;
    public const int ENOSYS = 38;
    public const int EAGAIN = 11;
    public const int EWOULDBLOCK = 11;
    public const int ELOOP = 40;
    public const int ENXIO = 6;

    public const int SEEK_DATA = 3;
    public const int SEEK_HOLE = 4;

    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_SH = 1;

    public const uint STATX_BASIC_STATS = 0x7ff;

    public const long UTIME_OMIT = (1L << 30) - 2;

    [StructLayout(LayoutKind.Sequential)]
    public struct Timespec
    {
        public long Seconds;
        public long Nanoseconds;

        public static Timespec FromUnixNanos(long ns) => new()
        {
            Seconds = Math.DivRem(ns, 1_000_000_000L, out var rem) - (rem < 0 ? 1 : 0),
            Nanoseconds = rem < 0 ? rem + 1_000_000_000L : rem,
        };
    }

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct Statx
    {
        [FieldOffset(0)] public uint Mask;
        [FieldOffset(16)] public uint Nlink;
        [FieldOffset(20)] public uint Uid;
        [FieldOffset(24)] public uint Gid;
        [FieldOffset(28)] public ushort Mode;
        [FieldOffset(32)] public ulong Ino;
        [FieldOffset(40)] public ulong Size;
        [FieldOffset(48)] public ulong Blocks;
        [FieldOffset(96)] public long CtimeSec;
        [FieldOffset(104)] public uint CtimeNsec;
        [FieldOffset(112)] public long MtimeSec;
        [FieldOffset(120)] public uint MtimeNsec;
        [FieldOffset(136)] public uint DevMajor;
        [FieldOffset(140)] public uint DevMinor;

        public readonly long MtimeNs => MtimeSec * 1_000_000_000L + MtimeNsec;

        public readonly long CtimeNs => CtimeSec * 1_000_000_000L + CtimeNsec;
    }

    public const int S_IFMT = 0xF000;
    public const int S_IFREG = 0x8000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFLNK = 0xA000;

    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int StatxCall(int dirfd, string path, int flags, uint mask, out Statx buf);

    /// <summary>fstatfs(2) into a struct statfs (120 bytes on 64-bit Linux; its f_type is the first 8).</summary>
    [LibraryImport(Lib, EntryPoint = "fstatfs", SetLastError = true)]
    public static partial int Fstatfs(int fd, byte* buf);

    /// <summary>The f_type of the file system an open file is on (statfs(2)), or null when it cannot be told.</summary>
    public static long? FileSystemType(int fd)
    {
        var buf = stackalloc byte[128];
        return Fstatfs(fd, buf) == 0 ? *(long*)buf : null;
    }

    [LibraryImport(Lib, EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int OpenAt(int dirfd, string path, int flags, int mode);

    /// <summary>statx of a path already encoded (NUL-terminated bytes): no string to marshal.</summary>
    [LibraryImport(Lib, EntryPoint = "statx", SetLastError = true)]
    public static partial int StatxBytes(int dirfd, byte* path, int flags, uint mask, out Statx buf);

    /// <summary>openat of a path already encoded (NUL-terminated bytes): no string to marshal.</summary>
    [LibraryImport(Lib, EntryPoint = "openat", SetLastError = true)]
    public static partial int OpenAtBytes(int dirfd, byte* path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int Open(string path, int flags, int mode);

    [LibraryImport(Lib, EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int MkdirAt(int dirfd, string path, int mode);

    [LibraryImport(Lib, EntryPoint = "symlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int SymlinkAt(string target, int newdirfd, string linkpath);

    [LibraryImport(Lib, EntryPoint = "fchmod", SetLastError = true)]
    public static partial int Fchmod(int fd, int mode);

    [LibraryImport(Lib, EntryPoint = "fchown", SetLastError = true)]
    public static partial int Fchown(int fd, int uid, int gid);

    [LibraryImport(Lib, EntryPoint = "futimens", SetLastError = true)]
    public static partial int Futimens(int fd, Timespec* times);

    [LibraryImport(Lib, EntryPoint = "utimensat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int UtimensAt(int dirfd, string path, Timespec* times, int flags);

    [LibraryImport(Lib, EntryPoint = "linkat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int LinkAt(int olddirfd, string oldpath, int newdirfd, string newpath, int flags);

    [LibraryImport(Lib, EntryPoint = "renameat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int RenameAt(int olddirfd, string oldpath, int newdirfd, string newpath);

    [LibraryImport(Lib, EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport(Lib, EntryPoint = "lseek", SetLastError = true)]
    public static partial long Lseek(int fd, long offset, int whence);

    [LibraryImport(Lib, EntryPoint = "ftruncate", SetLastError = true)]
    public static partial int Ftruncate(int fd, long length);

    [LibraryImport(Lib, EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int fd);

    [LibraryImport(Lib, EntryPoint = "gettid")]
    public static partial int Gettid();

    public const int PRIO_PROCESS = 0;

    /// <summary>setpriority(2); on Linux, PRIO_PROCESS with a thread id sets that one thread's nice value.</summary>
    [LibraryImport(Lib, EntryPoint = "setpriority", SetLastError = true)]
    public static partial int SetPriority(int which, uint who, int prio);

    /// <summary>fsync of a file, or of a directory so the names created in it survive a power loss; false when it could not be done.</summary>
    public static bool FsyncPath(string path, bool directory = false)
    {
        var fd = Open(path, O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0), 0);
        if (fd < 0)
        {
            return false;
        }

        var ok = Fsync(fd) == 0;
        Close(fd);
        return ok;
    }

    [LibraryImport(Lib, EntryPoint = "flock", SetLastError = true)]
    public static partial int Flock(int fd, int operation);

    [LibraryImport(Lib, EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport(Lib, EntryPoint = "isatty")]
    public static partial int Isatty(int fd);

    [LibraryImport(Lib, EntryPoint = "read", SetLastError = true)]
    public static partial nint Read(int fd, byte* buf, nint count);

    [StructLayout(LayoutKind.Sequential)]
    public readonly struct Iovec(byte* baseAddress, nint length)
    {
        public readonly byte* Base = baseAddress;
        public readonly nint Length = length;
    }

    [LibraryImport(Lib, EntryPoint = "pread64", SetLastError = true)]
    public static partial nint Pread(int fd, byte* buf, nint count, long offset);

    [LibraryImport(Lib, EntryPoint = "preadv", SetLastError = true)]
    public static partial nint Preadv(int fd, Iovec* iov, int iovcnt, long offset);

    [LibraryImport(Lib, EntryPoint = "pwrite", SetLastError = true)]
    public static partial nint Pwrite(int fd, byte* buf, nint count, long offset);

    [LibraryImport(Lib, EntryPoint = "pwritev", SetLastError = true)]
    public static partial nint Pwritev(int fd, Iovec* iov, int iovcnt, long offset);

    public const uint SYNC_FILE_RANGE_WRITE = 2;

    [LibraryImport(Lib, EntryPoint = "sync_file_range", SetLastError = true)]
    public static partial int SyncFileRange(int fd, long offset, long nbytes, uint flags);

    [LibraryImport(Lib, EntryPoint = "write", SetLastError = true)]
    public static partial nint Write(int fd, byte* buf, nint count);

    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    [LibraryImport(Lib, EntryPoint = "eventfd", SetLastError = true)]
    public static partial int Eventfd(uint initval, int flags);

    public const int M_TRIM_THRESHOLD = -1;
    public const int M_MMAP_THRESHOLD = -3;
    public const int MADV_POPULATE_WRITE = 23;

    /// <summary>glibc's malloc tuning (mallopt(3)); returns 1 on success, 0 on error.</summary>
    [LibraryImport(Lib, EntryPoint = "mallopt")]
    public static partial int Mallopt(int param, int value);

    [LibraryImport(Lib, EntryPoint = "malloc_trim")]
    public static partial int MallocTrim(nuint pad);

    [LibraryImport(Lib, EntryPoint = "madvise", SetLastError = true)]
    public static partial int Madvise(void* address, nuint length, int advice);

    public const int PROT_READ = 1;
    public const int PROT_WRITE = 2;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MADV_HUGEPAGE = 14;

    /// <summary>mmap(2); <c>(void*)-1</c> (MAP_FAILED) on error.</summary>
    [LibraryImport(Lib, EntryPoint = "mmap", SetLastError = true)]
    public static partial void* Mmap(void* address, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport(Lib, EntryPoint = "munmap", SetLastError = true)]
    public static partial int Munmap(void* address, nuint length);

    [LibraryImport(Lib, EntryPoint = "inotify_init1", SetLastError = true)]
    public static partial int InotifyInit1(int flags);

    [LibraryImport(Lib, EntryPoint = "inotify_add_watch", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int InotifyAddWatch(int fd, string path, uint mask);

    [LibraryImport(Lib, EntryPoint = "inotify_rm_watch", SetLastError = true)]
    public static partial int InotifyRmWatch(int fd, int wd);

    [LibraryImport(Lib, EntryPoint = "fanotify_init", SetLastError = true)]
    public static partial int FanotifyInit(uint flags, uint eventFlags);

    [LibraryImport(Lib, EntryPoint = "fanotify_mark", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int FanotifyMark(int fd, uint flags, ulong mask, int dirfd, string path);

    /// <summary>fanotify_mark(2) of the open file <paramref name="file"/> itself (dirfd with a null path).</summary>
    public static int FanotifyMarkFile(int fd, uint flags, ulong mask, int file) => FanotifyMarkNoPath(fd, flags, mask, file, 0);

    [LibraryImport(Lib, EntryPoint = "fanotify_mark", SetLastError = true)]
    private static partial int FanotifyMarkNoPath(int fd, uint flags, ulong mask, int dirfd, nint path);

    /// <summary>open_by_handle_at(2); <paramref name="handle"/> points to a struct file_handle.</summary>
    [LibraryImport(Lib, EntryPoint = "open_by_handle_at", SetLastError = true)]
    public static partial int OpenByHandleAt(int mountFd, byte* handle, int flags);

    [LibraryImport(Lib, EntryPoint = "readlink", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial nint Readlink(string path, byte* buf, nint size);

    [LibraryImport(Lib, EntryPoint = "unlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int UnlinkAt(int dirfd, string path, int flags);

    [LibraryImport(Lib, EntryPoint = "fchmodat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial int FchmodAt(int dirfd, string path, int mode, int flags);

    [LibraryImport(Lib, EntryPoint = "readlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    public static partial nint ReadlinkAt(int dirfd, string path, byte* buf, nint size);

    /// <summary>getdents64(2): fills <paramref name="buf"/> with struct linux_dirent64 records (u64 ino, s64 off, u16 reclen, u8 type, name NUL-terminated).</summary>
    [LibraryImport(Lib, EntryPoint = "getdents64", SetLastError = true)]
    public static partial nint Getdents64(int fd, byte* buf, nint count);

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    public const short POLLIN = 1;

    [LibraryImport(Lib, EntryPoint = "poll", SetLastError = true)]
    public static partial int Poll(PollFd* fds, nuint nfds, int timeoutMs);

    [LibraryImport(Lib, EntryPoint = "geteuid")]
    public static partial uint Geteuid();

    [LibraryImport(Lib, EntryPoint = "umask")]
    public static partial int Umask(int mask);

    public const int PR_SET_CHILD_SUBREAPER = 36;
    public const int WNOHANG = 1;
    public const int SIGCONT = 18;
    public const int SIGSTOP = 19;

    [LibraryImport(Lib, EntryPoint = "prctl", SetLastError = true)]
    public static partial int Prctl(int option, nuint arg2, nuint arg3, nuint arg4, nuint arg5);

    [LibraryImport(Lib, EntryPoint = "waitpid", SetLastError = true)]
    public static partial int Waitpid(int pid, out int status, int options);

    [LibraryImport(Lib, EntryPoint = "getpid")]
    public static partial int Getpid();

    [LibraryImport(Lib, EntryPoint = "strerror")]
    private static partial nint StrErrorPtr(int errnum);

    public static string StrError(int errno) => Marshal.PtrToStringUTF8(StrErrorPtr(errno)) ?? $"errno {errno}";
}
