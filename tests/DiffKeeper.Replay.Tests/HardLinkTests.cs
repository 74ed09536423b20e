using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Replay.Tests;

/// <summary>Files that share a link id at a moment are exported as one file with several names (docs/store-format.md, "link").</summary>
public sealed class HardLinkTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static NewVersion File(TraceWriter w, long rootId, string rel, long seq, string text, long? link)
    {
        var bytes = System.Text.Encoding.UTF8.GetBytes(text);
        var row = w.PutBlob(bytes, out var id);
        return new NewVersion(w.PathId(rootId, rel), seq, 0, EntryKind.File, 0x1A4, 0, 0, 1_000_000_000, bytes.Length,
            ExtentMap.ContentId([(0L, bytes.Length, id)], bytes.Length), null, ExtentMap.Encode([new Extent(0, bytes.Length, row)]), link);
    }

    private static (ulong Dev, ulong Ino, uint Links) Inode(string path)
    {
        Assert.Equal(0, Libc.StatxCall(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st));
        return (((ulong)st.DevMajor << 32) | st.DevMinor, st.Ino, st.Nlink);
    }

    [Fact]
    public void Names_sharing_a_link_id_export_as_one_file_with_the_newest_content()
    {
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var sid = w.BeginSession("crafted", "/", "test", 0, ["/r"], out var roots);
            w.AddVersion(sid, new NewVersion(w.PathId(roots[0], "d"), 1, 0, EntryKind.Directory, 0x1ED, 0, 0, 0, 0, null, null, null));
            w.AddVersion(sid, File(w, roots[0], "d/a", 1, "one", 1));
            w.AddVersion(sid, File(w, roots[0], "z", 2, "one", 1));
            // A damaged or crafted trace whose names disagree: the newest version (greatest id) is the file.
            w.AddVersion(sid, File(w, roots[0], "d/a", 3, "three", 1));
            w.AddVersion(sid, File(w, roots[0], "solo", 3, "solo", 2)); // a link id with one name: a plain file
            w.AddVersion(sid, File(w, roots[0], "other", 3, "three", null));
            w.Commit();
        }

        using var r = TraceReader.Open(_dir.Sub("t"));
        var session = r.Session(null);
        Materializer.Export(r, session, 2, _dir.Sub("at2"), force: false);
        Assert.Equal("one", System.IO.File.ReadAllText(_dir.Sub("at2/z")));
        Assert.Equal(Inode(_dir.Sub("at2/d/a")), Inode(_dir.Sub("at2/z")));
        Assert.Equal(2u, Inode(_dir.Sub("at2/z")).Links);

        var result = Materializer.Export(r, session, long.MaxValue, _dir.Sub("end"), force: false);
        Assert.Equal("three", System.IO.File.ReadAllText(_dir.Sub("end/z")));
        Assert.Equal(Inode(_dir.Sub("end/d/a")), Inode(_dir.Sub("end/z")));
        Assert.Equal(1u, Inode(_dir.Sub("end/solo")).Links);
        Assert.Equal(1u, Inode(_dir.Sub("end/other")).Links);
        Assert.Equal(4, result.Files);
        Assert.Equal(5 + 4 + 5, result.Bytes); // the linked file's bytes once
    }
}
