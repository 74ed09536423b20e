using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Capture.Scan;

/// <summary>
/// What lstat says of one path, with nanosecond mtime. Kind is null for FIFOs, sockets and devices. <see cref="Links"/>
/// is the number of names of the inode (hard links); <see cref="Device"/> with <see cref="Inode"/> names the file.
/// </summary>
public readonly record struct EntryStat(EntryKind? Kind, int Mode, int Uid, int Gid, long MtimeNs, long Size, ulong Inode, uint Links = 1, ulong Device = 0)
{
    /// <summary>lstat of <paramref name="absolutePath"/>; null when it does not exist (any more).</summary>
    public static EntryStat? Lstat(string absolutePath)
    {
        if (LongPath.Statx(absolutePath, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ENOENT or Libc.ENOTDIR)
            {
                return null;
            }

            throw errno == Libc.ENAMETOOLONG
                ? new PathTooLongException($"cannot stat {absolutePath}: {Libc.StrError(errno)}")
                : new IOException($"cannot stat {absolutePath}: {Libc.StrError(errno)}");
        }

        return From(st);
    }

    /// <summary>
    /// lstat of <paramref name="rel"/> below the watched root <paramref name="root"/> (rel empty: the root), as
    /// <see cref="Lstat(string)"/> of their join, without making the joined string (one per created file).
    /// </summary>
    public static EntryStat? Lstat(string root, string rel)
    {
        if (LongPath.Statx(root, rel, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ENOENT or Libc.ENOTDIR)
            {
                return null;
            }

            var path = LongPath.Join(root, rel);
            throw errno == Libc.ENAMETOOLONG
                ? new PathTooLongException($"cannot stat {path}: {Libc.StrError(errno)}")
                : new IOException($"cannot stat {path}: {Libc.StrError(errno)}");
        }

        return From(st);
    }

    /// <summary>
    /// lstat of <paramref name="name"/> inside the open directory <paramref name="dirfd"/>; null when it does not
    /// exist (any more). A walk uses it so the kernel looks up one name per entry, not every component of the
    /// absolute path again (the lookup was most of what a stat cost in a reconcile scan of 20,000 files).
    /// </summary>
    public static EntryStat? LstatAt(int dirfd, string name, string dirPathForErrors)
    {
        if (Libc.StatxCall(dirfd, name, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ENOENT or Libc.ENOTDIR)
            {
                return null;
            }

            throw new IOException($"cannot stat {dirPathForErrors}/{name}: {Libc.StrError(errno)}");
        }

        return From(st);
    }

    public static EntryStat From(in Libc.Statx st)
    {
        EntryKind? kind = (st.Mode & Libc.S_IFMT) switch
        {
            Libc.S_IFREG => EntryKind.File,
            Libc.S_IFDIR => EntryKind.Directory,
            Libc.S_IFLNK => EntryKind.Symlink,
            _ => null,
        };
        return new EntryStat(kind, st.Mode & 0xFFF, (int)st.Uid, (int)st.Gid, st.MtimeNs, (long)st.Size, st.Ino, st.Nlink,
            ((ulong)st.DevMajor << 32) | st.DevMinor);
    }
}
