using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Calls on absolute paths of any length. The kernel refuses a path of PATH_MAX (4096) bytes or more with
/// ENAMETOOLONG, yet a tree can be deeper (mkdirat relative to a directory descriptor makes one). A short path goes
/// to the call as is (one syscall, as before); a long one is opened in pieces shorter than PATH_MAX, each relative to
/// the descriptor of the one before, and the call is made relative to the last (the *at form). Every method returns
/// what the libc call does (-1 with the last P/Invoke error set on failure).
/// </summary>
public static unsafe class LongPath
{
    /// <summary>PATH_MAX: the longest path (with its NUL) one system call takes.</summary>
    public const int PathMax = 4096;

    /// <summary>statx of <paramref name="path"/> (absolute, any length).</summary>
    public static int Statx(string path, int flags, uint mask, out Libc.Statx st)
    {
        st = default;
        var dir = ParentFd(path, out var name);
        if (dir == -1)
        {
            return -1;
        }

        var r = Libc.StatxCall(dir, name, flags, mask, out st);
        CloseKeepingError(dir);
        return r;
    }

    /// <summary>
    /// statx of <paramref name="root"/>/<paramref name="rel"/> (<paramref name="rel"/> empty: the root), the two encoded
    /// side by side on the stack: no joined string is made (the recorder stats every created file, one string each).
    /// A path too long for that goes through <see cref="Statx(string, int, uint, out Libc.Statx)"/>.
    /// </summary>
    public static int Statx(string root, string rel, int flags, uint mask, out Libc.Statx st)
    {
        Span<byte> buffer = stackalloc byte[StackPath];
        var bytes = EncodeJoinedOrEmpty(root, rel, buffer);
        if (bytes.IsEmpty)
        {
            return Statx(Join(root, rel), flags, mask, out st);
        }

        fixed (byte* p = bytes)
        {
            return Libc.StatxBytes(Libc.AT_FDCWD, p, flags, mask, out st);
        }
    }

    /// <summary>open(2) of <paramref name="root"/>/<paramref name="rel"/>, as <see cref="Statx(string, string, int, uint, out Libc.Statx)"/> names it.</summary>
    public static int Open(string root, string rel, int flags, int mode)
    {
        Span<byte> buffer = stackalloc byte[StackPath];
        var bytes = EncodeJoinedOrEmpty(root, rel, buffer);
        if (bytes.IsEmpty)
        {
            return Open(Join(root, rel), flags, mode);
        }

        fixed (byte* p = bytes)
        {
            return Libc.OpenAtBytes(Libc.AT_FDCWD, p, flags, mode);
        }
    }

    /// <summary>The path <paramref name="rel"/> names below <paramref name="root"/> (rel empty: the root itself).</summary>
    public static string Join(string root, string rel) =>
        rel.Length == 0 ? root : root.EndsWith('/') ? root + rel : root + "/" + rel;

    // Paths encoded on the stack up to this many bytes (the marshaller's own stack buffer is as large).
    private const int StackPath = 1024;

    // root + '/' + rel as PathBytes encodes their join, with its NUL, or empty when it may not fit the buffer or is
    // PATH_MAX or longer (the kernel refuses that; the string path opens it in pieces). PathBytes encodes char by char, so the two halves encode as their join does.
    private static Span<byte> EncodeJoinedOrEmpty(string root, string rel, Span<byte> buffer)
    {
        var slash = rel.Length != 0 && !root.EndsWith('/') ? 1 : 0;
        if (PathBytes.MaxByteCount(root) + slash + PathBytes.MaxByteCount(rel) + 1 > buffer.Length)
        {
            return default;
        }

        var n = PathBytes.Encode(root, buffer);
        if (slash == 1)
        {
            buffer[n++] = (byte)'/';
        }

        n += PathBytes.Encode(rel, buffer[n..]);
        if (n >= PathMax - 1)
        {
            return default;
        }

        buffer[n] = 0;
        return buffer[..(n + 1)];
    }

    /// <summary>open(2) of <paramref name="path"/> (absolute, any length).</summary>
    public static int Open(string path, int flags, int mode)
    {
        var dir = ParentFd(path, out var name);
        if (dir == -1)
        {
            return -1;
        }

        var fd = Libc.OpenAt(dir, name, flags, mode);
        CloseKeepingError(dir);
        return fd;
    }

    /// <summary>The target of the symlink <paramref name="path"/> (absolute, any length), or null when it is not one or is gone.</summary>
    public static string? ReadLink(string path)
    {
        var dir = ParentFd(path, out var name);
        if (dir == -1)
        {
            return null;
        }

        try
        {
            return ReadLinkAt(dir, name);
        }
        finally
        {
            CloseKeepingError(dir);
        }
    }

    /// <summary>readlinkat(2) of any target length; null when it fails.</summary>
    public static string? ReadLinkAt(int dirfd, string name)
    {
        for (var size = 4096; size <= 1 << 20; size *= 4)
        {
            var buffer = new byte[size];
            nint n;
            fixed (byte* b = buffer)
            {
                n = Libc.ReadlinkAt(dirfd, name, b, size);
            }

            if (n < 0)
            {
                return null;
            }

            if (n < size)
            {
                return PathBytes.Decode(buffer.AsSpan(0, (int)n));
            }
        }

        return null;
    }

    /// <summary>inotify_add_watch(2) of the directory <paramref name="path"/> (absolute, any length).</summary>
    public static int InotifyAddWatch(int inotifyFd, string path, uint mask)
    {
        if (IsShort(path))
        {
            return Libc.InotifyAddWatch(inotifyFd, path, mask);
        }

        // inotify_add_watch has no *at form; the magic link of a descriptor of the directory names it. That link
        // must be followed, so IN_DONT_FOLLOW becomes O_NOFOLLOW on the descriptor.
        const uint IN_DONT_FOLLOW = 0x02000000;
        var fd = OpenDirectory(path, Libc.O_PATH | ((mask & IN_DONT_FOLLOW) != 0 ? Libc.O_NOFOLLOW : 0));
        if (fd < 0)
        {
            return -1;
        }

        var wd = Libc.InotifyAddWatch(inotifyFd, "/proc/self/fd/" + fd.ToString(System.Globalization.CultureInfo.InvariantCulture), mask & ~IN_DONT_FOLLOW);
        CloseKeepingError(fd);
        return wd;
    }

    /// <summary>
    /// The absolute path of an open directory descriptor (its /proc/self/fd link), also when that is longer than the kernel
    /// prints (ENAMETOOLONG): then the names of the directories above it are found by listing each parent.
    /// Null when the file is deleted or cannot be named.
    /// </summary>
    public static string? PathOfDirectory(int fd)
    {
        var below = new List<string>();
        var cur = Libc.OpenAt(fd, ".", Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (cur < 0)
        {
            return null;
        }

        try
        {
            for (var depth = 0; depth < 4096; depth++)
            {
                var link = ReadLinkAt(Libc.AT_FDCWD, "/proc/self/fd/" + cur.ToString(System.Globalization.CultureInfo.InvariantCulture));
                if (link is not null)
                {
                    if (link.EndsWith(" (deleted)", StringComparison.Ordinal) || !link.StartsWith('/'))
                    {
                        return null;
                    }

                    below.Reverse();
                    return below.Count == 0 ? link : (link == "/" ? "" : link) + "/" + string.Join('/', below);
                }

                if (Marshal.GetLastPInvokeError() != Libc.ENAMETOOLONG ||
                    Libc.StatxCall(cur, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var st) != 0)
                {
                    return null;
                }

                var parent = Libc.OpenAt(cur, "..", Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
                if (parent < 0)
                {
                    return null;
                }

                Libc.Close(cur);
                cur = parent;
                var name = ReadDirectory(parent, st.Ino);
                if (name is null)
                {
                    return null;
                }

                below.Add(name);
            }

            return null;
        }
        finally
        {
            Libc.Close(cur);
        }
    }

    /// <summary>The names in the directory <paramref name="path"/> (absolute, any length); null when it cannot be listed.</summary>
    public static List<string>? Names(string path)
    {
        var fd = OpenDirectory(path, Libc.O_RDONLY);
        if (fd < 0)
        {
            return null;
        }

        var names = List(fd);
        Libc.Close(fd);
        return names;
    }

    /// <summary>
    /// Removes <paramref name="path"/> (absolute, any length) and everything below it, without following symlinks,
    /// making directories writable first (a recorded read-only mode would stop it); false when something stayed.
    /// </summary>
    public static bool RemoveTree(string path)
    {
        var dir = ParentFd(path, out var name);
        if (dir == -1)
        {
            return false;
        }

        var removed = RemoveAt(dir, name);
        CloseKeepingError(dir);
        return removed;
    }

    private static bool RemoveAt(int dirfd, string name)
    {
        if (Libc.StatxCall(dirfd, name, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            return Marshal.GetLastPInvokeError() == Libc.ENOENT;
        }

        if ((st.Mode & Libc.S_IFMT) != Libc.S_IFDIR)
        {
            return Libc.UnlinkAt(dirfd, name, 0) == 0;
        }

        Libc.FchmodAt(dirfd, name, 0x1C0, 0);
        var fd = Libc.OpenAt(dirfd, name, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd >= 0)
        {
            foreach (var child in List(fd) ?? [])
            {
                RemoveAt(fd, child);
            }

            Libc.Close(fd);
        }

        return Libc.UnlinkAt(dirfd, name, Libc.AT_REMOVEDIR) == 0;
    }

    /// <summary>The names in the directory open as <paramref name="dirfd"/> (O_RDONLY), without "." and "..", as raw bytes decoded by <see cref="PathBytes"/>; null when it cannot be read.</summary>
    public static List<string>? List(int dirfd)
    {
        var names = new List<string>();
        return Read(dirfd, 0, names) ? names : null;
    }

    private static string? ReadDirectory(int dirfd, ulong inode)
    {
        var names = new List<string>(1);
        return Read(dirfd, inode, names) && names.Count == 1 ? names[0] : null;
    }

    // Lists every name (inode 0) or finds the name of one inode.
    private static bool Read(int dirfd, ulong inode, List<string> names)
    {
        const int Size = 32 * 1024;
        var buffer = (byte*)NativeMemory.Alloc(Size);
        try
        {
            for (;;)
            {
                var n = Libc.Getdents64(dirfd, buffer, Size);
                if (n < 0)
                {
                    return false;
                }

                if (n == 0)
                {
                    return true;
                }

                for (nint at = 0; at < n;)
                {
                    var ino = *(ulong*)(buffer + at);
                    var reclen = *(ushort*)(buffer + at + 16);
                    var name = new ReadOnlySpan<byte>(buffer + at + 19, reclen - 19);
                    name = name[..name.IndexOf((byte)0)];
                    at += reclen;
                    if (name is [(byte)'.'] or [(byte)'.', (byte)'.'])
                    {
                        continue;
                    }

                    if (inode == 0)
                    {
                        names.Add(PathBytes.Decode(name));
                    }
                    else if (ino == inode)
                    {
                        names.Add(PathBytes.Decode(name));
                        return true;
                    }
                }
            }
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }

    /// <summary>
    /// A descriptor of the directory <paramref name="path"/> (absolute, any length) opened with
    /// <paramref name="flags"/> | O_DIRECTORY | O_CLOEXEC; -1 on failure.
    /// </summary>
    public static int OpenDirectory(string path, int flags)
    {
        if (IsShort(path))
        {
            return Libc.Open(path, flags | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        }

        var dir = ParentFd(path, out var name);
        if (dir == -1)
        {
            return -1;
        }

        var fd = Libc.OpenAt(dir, name, flags | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        CloseKeepingError(dir);
        return fd;
    }

    /// <summary>
    /// AT_FDCWD and the path itself when the path is short; else a descriptor (O_PATH) of the directory that holds
    /// its last component, and that component. -1 when that directory cannot be opened.
    /// </summary>
    private static int ParentFd(string path, out string name)
    {
        name = path;
        if (IsShort(path))
        {
            return Libc.AT_FDCWD;
        }

        var slash = path.LastIndexOf('/');
        name = path[(slash + 1)..];
        var rest = slash <= 0 ? "/" : path[..slash];
        var fd = Libc.AT_FDCWD;
        while (rest.Length > 0)
        {
            // The longest prefix shorter than PATH_MAX that ends at a '/', opened relative to the last piece.
            var cut = rest.Length;
            if (Bytes(rest, rest.Length) >= PathMax - 1)
            {
                cut = -1;
                for (var next = rest.IndexOf('/', StringComparison.Ordinal); next >= 0 && Bytes(rest, next) < PathMax - 1; next = rest.IndexOf('/', next + 1))
                {
                    cut = next;
                }

                if (cut < 0)
                {
                    CloseKeepingError(fd);
                    Marshal.SetLastPInvokeError(Libc.ENAMETOOLONG);
                    return -1;
                }
            }

            var piece = cut == 0 ? "/" : rest[..cut];
            rest = cut >= rest.Length ? "" : rest[(cut + 1)..];
            var opened = Libc.OpenAt(fd, piece, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
            CloseKeepingError(fd);
            if (opened < 0)
            {
                return -1;
            }

            fd = opened;
        }

        return fd;
    }

    private static bool IsShort(string path) => path.Length * 3 < PathMax - 1 || Bytes(path, path.Length) < PathMax - 1;

    // UTF-8 length of path[..count] as PathBytes encodes it.
    private static int Bytes(string path, int count)
    {
        var n = 0;
        for (var i = 0; i < count; i++)
        {
            var c = path[i];
            n += c < 0x80 || c is >= '\uDC80' and <= '\uDCFF' ? 1 : c < 0x800 ? 2 : char.IsSurrogate(c) ? 2 : 3;
        }

        return n;
    }

    private static void CloseKeepingError(int fd)
    {
        if (fd >= 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            Libc.Close(fd);
            Marshal.SetLastPInvokeError(errno);
        }
    }
}
