using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Replay.Tests;

/// <summary>A trace is untrusted input: crafted catalogs must never make export write outside --out.</summary>
public sealed class UntrustedTraceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Trace => _dir.Sub("trace");

    private string Outside => _dir.Sub("outside");

    /// <summary>Writes a session whose state is exactly the given entries (file content, dir, or symlink target).</summary>
    private void Craft(params (string Rel, EntryKind Kind, string Data)[] entries)
    {
        using var w = TraceWriter.Open(Trace);
        var sid = w.BeginSession("crafted", "/", "test", 0, ["/crafted-root"], out var roots);
        var seq = 0L;
        foreach (var (rel, kind, data) in entries)
        {
            var pathId = w.PathId(roots[0], rel);
            seq++;
            if (kind == EntryKind.File)
            {
                var bytes = System.Text.Encoding.UTF8.GetBytes(data);
                var row = w.PutBlob(bytes, out var id);
                var extents = bytes.Length == 0 ? [] : new List<Extent> { new(0, bytes.Length, row) };
                var content = ExtentMap.ContentId(bytes.Length == 0 ? [] : [(0L, bytes.Length, id)], bytes.Length);
                w.AddVersion(sid, new NewVersion(pathId, seq, 0, kind, 0x1A4, 0, 0, 0, bytes.Length, content, null, ExtentMap.Encode(extents)));
            }
            else
            {
                w.AddVersion(sid, new NewVersion(pathId, seq, 0, kind, 0x1ED, 0, 0, 0, 0, null, kind == EntryKind.Symlink ? data : null, null));
            }
        }

        w.Commit();
    }

    private DiffKeeperException ExportFails(string outDir)
    {
        using var r = TraceReader.Open(Trace);
        var s = r.Session(null);
        return Assert.Throws<DiffKeeperException>(() => Materializer.Export(r, s, long.MaxValue, outDir, force: false));
    }

    private void AssertNothingLeaked(string outDir)
    {
        Assert.False(Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any(), "a refused export left output behind");
        Assert.Empty(Directory.EnumerateFileSystemEntries(Outside));
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_dir.Path), p => Path.GetFileName(p).Contains(".dk-tmp-", StringComparison.Ordinal));
    }

    public UntrustedTraceTests() => Directory.CreateDirectory(Outside);

    [Fact]
    public void Dot_dot_paths_are_refused()
    {
        Craft(("ok.txt", EntryKind.File, "fine"), ("../outside/x", EntryKind.File, "escaped"));
        var e = ExportFails(_dir.Sub("out"));
        Assert.Equal(ExitCode.UnsafePath, e.Code);
        Assert.Contains("../outside/x", e.Message);
        AssertNothingLeaked(_dir.Sub("out"));
    }

    [Fact]
    public void Absolute_paths_are_refused()
    {
        var target = Path.Combine(Outside, "abs");
        Craft(("ok.txt", EntryKind.File, "fine"), (target, EntryKind.File, "escaped"), ("/etc/dk-should-not-exist", EntryKind.File, "x"));
        var e = ExportFails(_dir.Sub("out"));
        Assert.Equal(ExitCode.UnsafePath, e.Code);
        AssertNothingLeaked(_dir.Sub("out"));
        Assert.False(File.Exists("/etc/dk-should-not-exist"));
    }

    [Fact]
    public void A_symlinked_parent_pointing_outside_is_refused()
    {
        Craft(("a", EntryKind.Symlink, Outside), ("a/x", EntryKind.File, "escaped"));
        var e = ExportFails(_dir.Sub("out"));
        Assert.Equal(ExitCode.UnsafePath, e.Code);
        Assert.Contains("a/x", e.Message);
        AssertNothingLeaked(_dir.Sub("out"));
    }

    [Fact]
    public void The_safe_writer_does_not_follow_a_symlink_planted_in_its_tree()
    {
        var root = _dir.Sub("tree");
        Directory.CreateDirectory(root);
        File.CreateSymbolicLink(Path.Combine(root, "d"), Outside);
        using var tree = SafeTreeWriter.Open(root);
        var e = Assert.Throws<DiffKeeperException>(() => tree.CreateFile("d/x").Dispose());
        Assert.Equal(ExitCode.UnsafePath, e.Code);
        Assert.Throws<DiffKeeperException>(() => tree.CreateDirectory("d/sub"));
        Assert.ThrowsAny<Exception>(() => tree.CreateFile("d").Dispose()); // O_EXCL|O_NOFOLLOW: never opens the link
        Assert.Empty(Directory.EnumerateFileSystemEntries(Outside));
    }

    [Fact]
    public void Symlinks_themselves_are_recreated_but_never_written_through()
    {
        Craft(("link", EntryKind.Symlink, "/etc/passwd"), ("dir", EntryKind.Directory, ""), ("dir/f", EntryKind.File, "data"));
        using var r = TraceReader.Open(Trace);
        var result = Materializer.Export(r, r.Session(null), long.MaxValue, _dir.Sub("out"), force: false);
        Assert.Equal(1, result.Symlinks);
        Assert.Equal("/etc/passwd", new FileInfo(Path.Combine(_dir.Sub("out"), "link")).LinkTarget);
        Assert.Equal("data", File.ReadAllText(Path.Combine(_dir.Sub("out"), "dir/f")));
    }

    [Fact]
    public void A_non_empty_output_needs_force_and_is_then_replaced_whole()
    {
        Craft(("new.txt", EntryKind.File, "new"));
        var outDir = _dir.Sub("out");
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "old.txt"), "old");
        Assert.Equal(ExitCode.OutputExists, ExportFails(outDir).Code);
        Assert.True(File.Exists(Path.Combine(outDir, "old.txt")));
        using var r = TraceReader.Open(Trace);
        Materializer.Export(r, r.Session(null), long.MaxValue, outDir, force: true);
        Assert.Equal(["new.txt"], Directory.EnumerateFileSystemEntries(outDir).Select(Path.GetFileName));
    }

    [Fact]
    public void A_damaged_blob_fails_with_one_line_naming_the_path()
    {
        Craft(("good.txt", EntryKind.File, "good"), ("bad.txt", EntryKind.File, new string('b', 5000)));
        var pack = Directory.EnumerateFiles(Path.Combine(Trace, "packs"), "*.pack", SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(pack);
        bytes[^10] ^= 0xFF; // inside the last record: bad.txt's blob
        File.WriteAllBytes(pack, bytes);
        var e = ExportFails(_dir.Sub("out"));
        Assert.Equal(ExitCode.Corrupt, e.Code);
        Assert.Contains("bad.txt", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(Directory.Exists(_dir.Sub("out")));
    }
}
