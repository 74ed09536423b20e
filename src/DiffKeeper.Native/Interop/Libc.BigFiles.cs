using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>The libc calls of big-file materialization: reflink clones, hole punching, atomic directory exchange.</summary>
public static unsafe partial class Libc
{
    /// <summary>_IOW(0x94, 9, int): share all of a source file's extents with the destination (btrfs, xfs reflink=1).</summary>
    public const ulong FICLONE = 0x40049409;

    public const int FALLOC_FL_KEEP_SIZE = 1;
    public const int FALLOC_FL_PUNCH_HOLE = 2;
    public const uint RENAME_EXCHANGE = 2;
    public const int EXDEV = 18;
    public const int EOPNOTSUPP = 95;
    public const int ESRCH = 3;

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlInt(int fd, ulong request, int arg);

    [LibraryImport(Lib, EntryPoint = "fallocate", SetLastError = true)]
    public static partial int Fallocate(int fd, int mode, long offset, long length);

    [LibraryImport(Lib, EntryPoint = "renameat2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int RenameAt2(int olddirfd, string oldpath, int newdirfd, string newpath, uint flags);

    public const int POSIX_FADV_DONTNEED = 4;

    /// <summary>Returns 0 or the error number (it does not set errno).</summary>
    [LibraryImport(Lib, EntryPoint = "posix_fadvise")]
    public static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
