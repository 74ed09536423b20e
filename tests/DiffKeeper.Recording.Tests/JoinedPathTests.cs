using System.Runtime.InteropServices;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The recorder stats and opens a path as a watched root and a name below it, encoded side by side on the stack
/// (<see cref="LongPath.Statx(string, string, int, uint, out Libc.Statx)"/>, <see cref="EntryStat.Lstat(string, string)"/>,
/// <see cref="LongPath.Open(string, string, int, int)"/>) instead of making their joined string. Each must name what
/// the joined string names: a root with and without its trailing slash, the root itself, names of bytes that are not
/// UTF-8, a symlink (not followed), missing names, and paths too long for the stack buffer or for one system call.
/// </summary>
public sealed class JoinedPathTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dk-joined-" + Guid.NewGuid().ToString("N"));

    public JoinedPathTests()
    {
        Directory.CreateDirectory(Path.Combine(_root, "d"));
        File.WriteAllText(Path.Combine(_root, "d", "f.txt"), "hello");
        File.CreateSymbolicLink(Path.Combine(_root, "d", "link"), "f.txt");
        // A name of two bytes that are not UTF-8 (its string holds them as escaped lone surrogates), made through the
        // project's own encoding (.NET's would write U+FFFD).
        Assert.Equal(0, Libc.MkdirAt(Libc.AT_FDCWD, _root + "/d/" + Raw, 0x1ED));
        var fd = Libc.OpenAt(Libc.AT_FDCWD, _root + "/d/" + Raw + "/x", Libc.O_WRONLY | Libc.O_CREAT | Libc.O_CLOEXEC, 0x1A4);
        Assert.True(fd >= 0);
        Libc.Close(fd);
    }

    private static readonly string Raw = PathBytes.Decode([0xFF, 0xFE]);

    public void Dispose() => LongPath.RemoveTree(_root);

    [Theory]
    [InlineData("")]
    [InlineData("d")]
    [InlineData("d/f.txt")]
    [InlineData("d/link")]
    [InlineData("d/{raw}")]
    [InlineData("d/{raw}/x")]
    [InlineData("missing")]
    [InlineData("d/f.txt/below")]
    [InlineData("d/missing/x")]
    public void A_name_below_a_root_is_stated_and_opened_as_their_joined_path(string name)
    {
        var rel = name.Replace("{raw}", Raw, StringComparison.Ordinal);
        foreach (var root in new[] { _root, _root + "/" })
        {
            AssertSame(root, rel);
        }
    }

    [Fact]
    public void Paths_longer_than_the_stack_buffer_or_than_one_system_call_are_stated_and_opened_too()
    {
        // Directories of 200-byte names, made relative to each other: past 1 KiB (the stack buffer) and past
        // PATH_MAX (4,096 bytes, which one call refuses) below the root.
        var name = new string('n', 200);
        var rel = "";
        var fd = Libc.OpenAt(Libc.AT_FDCWD, _root, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        for (var depth = 0; depth < 25; depth++)
        {
            Assert.Equal(0, Libc.MkdirAt(fd, name, 0x1ED));
            var next = Libc.OpenAt(fd, name, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
            Libc.Close(fd);
            fd = next;
            rel = rel.Length == 0 ? name : rel + "/" + name;
            if (depth is 4 or 24)
            {
                var file = Libc.OpenAt(fd, "f", Libc.O_WRONLY | Libc.O_CREAT | Libc.O_CLOEXEC, 0x1A4);
                Libc.Close(file);
                AssertSame(_root, rel);
                AssertSame(_root, rel + "/f");
                AssertSame(_root, rel + "/missing");
            }
        }

        Libc.Close(fd);
        Assert.True(PathBytes.Encode(_root + "/" + rel).Length > LongPath.PathMax);
    }

    private static void AssertSame(string root, string rel)
    {
        var joined = LongPath.Join(root, rel);
        var expected = EntryStat.Lstat(joined);
        Assert.Equal(expected, EntryStat.Lstat(root, rel));
        Assert.Equal(rel.Length == 0 ? EntryKind.Directory : expected?.Kind, EntryStat.Lstat(root, rel)?.Kind);

        const int flags = Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY;
        var byString = LongPath.Open(joined, flags, 0);
        var byStringErrno = byString < 0 ? Marshal.GetLastPInvokeError() : 0;
        var byParts = LongPath.Open(root, rel, flags, 0);
        var byPartsErrno = byParts < 0 ? Marshal.GetLastPInvokeError() : 0;
        try
        {
            Assert.Equal(byString < 0, byParts < 0);
            Assert.Equal(byStringErrno, byPartsErrno);
            if (byString >= 0)
            {
                Assert.Equal(0, Libc.StatxCall(byString, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var a));
                Assert.Equal(0, Libc.StatxCall(byParts, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var b));
                Assert.Equal(a.Ino, b.Ino);
                Assert.Equal(expected?.Inode, b.Ino);
            }
        }
        finally
        {
            if (byString >= 0)
            {
                Libc.Close(byString);
            }

            if (byParts >= 0)
            {
                Libc.Close(byParts);
            }
        }
    }
}
