using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>
/// Opens files inside a trace, which is untrusted input: with <c>O_NOFOLLOW | O_NONBLOCK</c>, so a symlink planted
/// in place of a pack or the catalog is refused and a FIFO cannot block the open, and only when what is there is a
/// regular file, so no read can block on a FIFO or a device later. Every reader of pack files and the catalog's
/// existence check go through here (docs/store-format.md, "Validation").
/// </summary>
public static class TraceFile
{
    /// <summary>
    /// Opens the regular file at <paramref name="path"/>. Throws <see cref="FileNotFoundException"/> when nothing is
    /// there (or a part of the path is not a directory), exit 5 when it is a symlink, FIFO, device, socket or
    /// directory, and exit 10 for other refusals (permission denied).
    /// </summary>
    public static SafeFileHandle OpenRegular(string path, bool write = false)
    {
        var flags = (write ? Libc.O_RDWR : Libc.O_RDONLY) | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY;
        var fd = Libc.Open(path, flags, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == Libc.ELOOP)
            {
                throw NotRegular(path, "a symbolic link");
            }

            if (errno is Libc.ENOENT or Libc.ENOTDIR)
            {
                throw new FileNotFoundException($"{path} does not exist", path);
            }

            throw OsError.At(errno, write ? "write" : "read", path);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.StatxCall(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            handle.Dispose();
            throw OsError.At(errno, "read", path);
        }

        if ((st.Mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            handle.Dispose();
            throw NotRegular(path, KindName(st.Mode));
        }

        return handle;
    }

    /// <summary>Null when <paramref name="path"/> is missing or a regular file; else what it is ("a FIFO"), without following a symlink.</summary>
    public static string? NotRegularKind(string path)
    {
        if (Libc.StatxCall(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            return null;
        }

        return (st.Mode & Libc.S_IFMT) == Libc.S_IFREG ? null : KindName(st.Mode);
    }

    /// <summary>The length of a regular file, or null when it is missing; throws as <see cref="OpenRegular"/> does when it is something else.</summary>
    public static long? Length(string path)
    {
        try
        {
            using var h = OpenRegular(path);
            return RandomAccess.GetLength(h);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
    }

    /// <summary>
    /// Refuses a trace whose catalog journal files or lock files are there but are not regular files: SQLite and the
    /// locks open them without O_NONBLOCK, and a FIFO would block that open or a read forever.
    /// </summary>
    public static void CheckSidecars(string traceDir)
    {
        foreach (var name in (string[])["catalog.db-wal", "catalog.db-shm", "LOCK", "LOCK.readers"])
        {
            var path = Path.Combine(traceDir, name);
            if (NotRegularKind(path) is { } kind)
            {
                throw NotRegular(path, kind);
            }
        }
    }

    /// <summary>
    /// A warning when another user may write the trace directory or its catalog (mode o+w, without the sticky bit
    /// for the directory): whoever can write there can swap what this process reads. Null when neither is.
    /// </summary>
    public static string? OthersMayWrite(string traceDir)
    {
        foreach (var (path, directory) in new[] { (traceDir, true), (Path.Combine(traceDir, "catalog.db"), false) })
        {
            if (Libc.StatxCall(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) == 0 &&
                (st.Mode & 0x2) != 0 && !(directory && (st.Mode & 0x200) != 0))
            {
                return $"{path} is writable by every user (mode {Convert.ToString(st.Mode & 0xFFF, 8)}); anyone could have changed this trace, so treat what it shows with care ('chmod o-w {path}')";
            }
        }

        return null;
    }

    private static DiffKeeperException NotRegular(string path, string kind) =>
        new(ExitCode.Corrupt, $"{path} is {kind}, not a regular file: the trace is damaged or crafted, and diffkeeper does not read it");

    private static string KindName(int mode) => (mode & Libc.S_IFMT) switch
    {
        Libc.S_IFDIR => "a directory",
        Libc.S_IFLNK => "a symbolic link",
        0x1000 => "a FIFO",
        0xC000 => "a socket",
        0x2000 => "a character device",
        0x6000 => "a block device",
        _ => "not a regular file",
    };
}
