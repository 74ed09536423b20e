using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Replay;

/// <summary>
/// Creates entries below one directory and nowhere else. Every path is walked component by component from the
/// directory's fd with openat(O_NOFOLLOW | O_DIRECTORY), so a symlink anywhere on the way (planted by a crafted
/// trace or by another process) makes the call fail instead of writing outside. New files use O_EXCL. Not
/// thread-safe.
/// </summary>
public sealed class SafeTreeWriter : IDisposable
{
    private const int DirFlags = Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC;
    private readonly int _rootFd;
    private readonly Dictionary<string, int> _dirFds = new(StringComparer.Ordinal);

    private SafeTreeWriter(int rootFd)
    {
        _rootFd = rootFd;
    }

    /// <summary>Opens an existing directory (not through a symlink) as the root of everything written.</summary>
    public static SafeTreeWriter Open(string directory)
    {
        var fd = Libc.Open(directory, DirFlags, 0);
        if (fd < 0)
        {
            throw Fail("open", directory, Marshal.GetLastPInvokeError());
        }

        return new SafeTreeWriter(fd);
    }

    /// <summary>
    /// A second writer below the same directory (its own descriptor of it, its own cache of directories), for
    /// another thread: writers are not thread-safe, but two of them may create entries below one directory at once.
    /// </summary>
    public SafeTreeWriter Fork()
    {
        var fd = Libc.OpenAt(_rootFd, ".", DirFlags, 0);
        if (fd < 0)
        {
            throw Fail("open", ".", Marshal.GetLastPInvokeError());
        }

        return new SafeTreeWriter(fd);
    }

    public void CreateDirectory(string rel)
    {
        var (parent, name) = Split(rel);
        if (Libc.MkdirAt(DirFd(parent), name, 0x1C0) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno != Libc.EEXIST)
            {
                throw Fail("create directory", rel, errno);
            }

            _ = DirFd(rel); // exists: it must be a real directory, not a symlink
        }
    }

    /// <summary>Creates a new file (never an existing one, never through a symlink), open for writing.</summary>
    public SafeFileHandle CreateFile(string rel)
    {
        var (parent, name) = Split(rel);
        var fd = Libc.OpenAt(DirFd(parent), name, Libc.O_RDWR | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x180);
        if (fd < 0)
        {
            throw Fail("create", rel, Marshal.GetLastPInvokeError());
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>
    /// Writes all of <paramref name="data"/> at <paramref name="offset"/> of a file <see cref="CreateFile"/> made;
    /// safe to call from several threads for disjoint ranges. One pwrite on the fd, not RandomAccess.Write, whose
    /// first use of a handle asks lseek whether it can seek: one system call per file for nothing.
    /// </summary>
    public static unsafe void Write(SafeFileHandle file, ReadOnlySpan<byte> data, long offset, string rel)
    {
        var fd = (int)file.DangerousGetHandle();
        fixed (byte* p = data)
        {
            var done = 0;
            while (done < data.Length)
            {
                var n = Libc.Pwrite(fd, p + done, data.Length - done, offset + done);
                if (n < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Libc.EINTR)
                    {
                        continue;
                    }

                    throw Fail("write", rel, errno);
                }

                if (n == 0)
                {
                    throw new DiffKeeperException(ExitCode.SystemError, $"cannot write {rel}: the file system accepted no bytes") { Path = rel };
                }

                done += (int)n;
            }
        }
    }

    /// <summary>
    /// Makes <paramref name="rel"/> a new name of the file <paramref name="existing"/> (a hard link; linkat without
    /// AT_SYMLINK_FOLLOW, so a symlink is never followed), both below this directory.
    /// </summary>
    public void CreateHardLink(string existing, string rel)
    {
        var (fromParent, fromName) = Split(existing);
        var (parent, name) = Split(rel);
        var fromFd = DirFd(fromParent);
        var toFd = DirFd(parent);
        if (fromParent.Length > 0 && !(_dirFds.TryGetValue(fromParent, out var still) && still == fromFd))
        {
            fromFd = DirFd(fromParent); // the cache was emptied while opening the second directory
        }

        if (Libc.LinkAt(fromFd, fromName, toFd, name, 0) != 0)
        {
            throw Fail("create hard link", rel, Marshal.GetLastPInvokeError());
        }
    }

    public void CreateSymlink(string rel, string target)
    {
        var (parent, name) = Split(rel);
        if (Libc.SymlinkAt(target, DirFd(parent), name) != 0)
        {
            throw Fail("create symlink", rel, Marshal.GetLastPInvokeError());
        }
    }

    // A trace is untrusted: setuid and setgid bits are never restored (a crafted trace exported by root would
    // otherwise plant a setuid-root binary); directories keep the sticky bit.
    private const int FileModeMask = 0x1FF; // 0777
    private const int DirectoryModeMask = 0x3FF; // 01777

    public static void SetFileMetadata(SafeFileHandle file, int mode, long mtimeNs, string rel) =>
        SetModeAndMtime((int)file.DangerousGetHandle(), mode & FileModeMask, mtimeNs, rel);

    public void SetDirectoryMetadata(string rel, int mode, long mtimeNs) => SetModeAndMtime(DirFd(rel), mode & DirectoryModeMask, mtimeNs, rel);

    public unsafe void SetSymlinkMtime(string rel, long mtimeNs)
    {
        var (parent, name) = Split(rel);
        var times = stackalloc Libc.Timespec[2];
        SetTimes(times, mtimeNs);
        if (Libc.UtimensAt(DirFd(parent), name, times, Libc.AT_SYMLINK_NOFOLLOW) != 0)
        {
            throw Fail("set mtime of", rel, Marshal.GetLastPInvokeError());
        }
    }

    private static unsafe void SetModeAndMtime(int fd, int mode, long mtimeNs, string rel)
    {
        if (Libc.Fchmod(fd, mode) != 0)
        {
            throw Fail("chmod", rel, Marshal.GetLastPInvokeError());
        }

        var times = stackalloc Libc.Timespec[2];
        SetTimes(times, mtimeNs);
        if (Libc.Futimens(fd, times) != 0)
        {
            throw Fail("set mtime of", rel, Marshal.GetLastPInvokeError());
        }
    }

    // atime is left as it is; only the recorded mtime is restored.
    private static unsafe void SetTimes(Libc.Timespec* times, long mtimeNs)
    {
        times[0] = new Libc.Timespec { Seconds = 0, Nanoseconds = Libc.UTIME_OMIT };
        times[1] = Libc.Timespec.FromUnixNanos(mtimeNs);
    }

    private int DirFd(string rel)
    {
        if (rel.Length == 0)
        {
            return _rootFd;
        }

        if (_dirFds.TryGetValue(rel, out var fd))
        {
            return fd;
        }

        if (_dirFds.Count >= 256)
        {
            CloseCached();
        }

        var (parent, name) = Split(rel);
        var parentFd = DirFd(parent);
        fd = Libc.OpenAt(parentFd, name, DirFlags, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ELOOP or Libc.ENOTDIR)
            {
                throw new DiffKeeperException(ExitCode.UnsafePath,
                    $"refusing to write below '{PathBytes.Display(rel)}': it is not a directory but a symlink or a file at that moment (the trace is damaged or crafted)")
                { Path = rel };
            }

            throw Fail("open directory", rel, errno);
        }

        _dirFds[rel] = fd;
        return fd;
    }

    private static (string Parent, string Name) Split(string rel)
    {
        TracePath.Validate(rel);
        var i = rel.LastIndexOf('/');
        return i < 0 ? ("", rel) : (rel[..i], rel[(i + 1)..]);
    }

    private static DiffKeeperException Fail(string what, string rel, int errno) =>
        new(ExitCode.SystemError, $"cannot {what} {PathBytes.Display(rel)}: {Libc.StrError(errno)}") { Path = rel };

    private void CloseCached()
    {
        foreach (var fd in _dirFds.Values)
        {
            Libc.Close(fd);
        }

        _dirFds.Clear();
    }

    public void Dispose()
    {
        CloseCached();
        Libc.Close(_rootFd);
    }
}
