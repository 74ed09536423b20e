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

    /// <summary>_IOWR('f', 11, struct fiemap): the extents of a file's range.</summary>
    public const ulong FS_IOC_FIEMAP = 0xC020660B;

    public const uint FIEMAP_EXTENT_LAST = 0x1;
    public const uint FIEMAP_EXTENT_UNWRITTEN = 0x800;

    /// <summary>Size of struct fiemap (the header) and of one struct fiemap_extent.</summary>
    public const int FiemapHeaderSize = 32, FiemapExtentSize = 56;

    [LibraryImport(Lib, EntryPoint = "ioctl", SetLastError = true)]
    private static partial int IoctlPointer(int fd, ulong request, void* arg);

    /// <summary>
    /// FS_IOC_FIEMAP into <paramref name="buffer"/>, a struct fiemap whose header the caller filled (start, length,
    /// flags, extent count) followed by room for that many extents; 0 or -1 with errno set.
    /// </summary>
    public static int Fiemap(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            return IoctlPointer(fd, FS_IOC_FIEMAP, p);
        }
    }

    /// <summary>_IOW(0x94, 13, struct file_clone_range): share a range of a source file's extents with a range of the destination.</summary>
    public const ulong FICLONERANGE = 0x4020940D;

    /// <summary>
    /// FICLONERANGE: makes <paramref name="length"/> bytes of <paramref name="destFd"/> at <paramref name="destOffset"/>
    /// share the extents of <paramref name="srcFd"/> at <paramref name="srcOffset"/> (offsets and length multiples of the
    /// file system's block size); 0 or -1 with errno set (EXDEV across file systems, EOPNOTSUPP or EINVAL where the file
    /// system or the alignment does not allow it).
    /// </summary>
    public static int CloneRange(int destFd, int srcFd, long srcOffset, long length, long destOffset)
    {
        var range = stackalloc long[4];
        range[0] = srcFd;
        range[1] = srcOffset;
        range[2] = length;
        range[3] = destOffset;
        return IoctlPointer(destFd, FICLONERANGE, range);
    }

    public const int POSIX_FADV_DONTNEED = 4;

    /// <summary>Returns 0 or the error number (it does not set errno).</summary>
    [LibraryImport(Lib, EntryPoint = "posix_fadvise")]
    public static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
