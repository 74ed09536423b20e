using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Paths are byte strings in the catalog (docs/store-format.md, "Paths"): UTF-8 ones are TEXT as they always were,
/// others a BLOB of their exact bytes. A trace written before that rule reads as it is, with no migration.
/// </summary>
public sealed class PathEncodingTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static readonly string Bad = PathBytes.Decode("bad_byte"u8.ToArray().Select(b => b == (byte)'_' ? (byte)0xFF : b).ToArray());

    [Fact]
    public void A_trace_written_before_paths_were_bytes_reads_as_is_and_takes_a_non_UTF8_path_beside_its_own()
    {
        var trace = _dir.Sub("v2");
        StoreFiles.CopyDirectory(Path.Combine(AppContext.BaseDirectory, "Fixtures", "format-v2-paths"), trace);
        Check(trace);

        var bytes = new byte[] { (byte)'d', 0x80, (byte)'i', (byte)'r', (byte)'/', (byte)'f', 0xFE, (byte)'\n' };
        var rel = PathBytes.Decode(bytes);
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, (rel, "raw"u8.ToArray()), ("d/été", "text"u8.ToArray()));
            using var types = w.Database.Prepare("SELECT rel, typeof(rel) FROM paths ORDER BY id");
            var rows = new List<(string, string)>();
            while (types.Step())
            {
                rows.Add((types.Path(0), types.String(1)));
            }

            // The old rows stay TEXT; the new UTF-8 one is TEXT too; only the non-UTF-8 one is a BLOB, of its exact bytes.
            Assert.All(rows.Where(r => r.Item1 != rel), r => Assert.Equal("text", r.Item2));
            Assert.Equal("blob", rows.Single(r => r.Item1 == rel).Item2);
            using var raw = w.Database.Prepare("SELECT rel FROM paths WHERE typeof(rel) = 'blob'");
            Assert.True(raw.Step());
            Assert.Equal(bytes, raw.BlobOrNull(0));
        }

        Check(trace);
        using var r = TraceReader.Open(trace);
        var s = r.Session(null);
        var state = r.StateAt(s, long.MaxValue).ToDictionary(v => v.Rel);
        Assert.Equal(bytes, PathBytes.Encode(state[rel].Rel));
        Assert.Equal("raw"u8.ToArray(), TraceStoreTests.ReadBack(r, state[rel]));
        Assert.Equal("text"u8.ToArray(), TraceStoreTests.ReadBack(r, state["d/été"]));
        Assert.Equal(state[rel].PathId, r.FindPath(s, rel)?.PathId);
        Assert.Equal(state[rel].PathId, r.FindPath(s, @"d\x80ir/f\xfe\n")?.PathId); // the display form names it too
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);

        static void Check(string trace)
        {
            using var r = TraceReader.Open(trace);
            var s = r.Sessions()[0];
            var end = r.StateAt(s, long.MaxValue).ToDictionary(v => v.Rel);
            Assert.Equal(["back\\slash", "link to a", "new\nline", "sp ace", "sp ace/été", "sp ace/été/a.txt"], end.Keys.Order(StringComparer.Ordinal));
            Assert.Equal("hello\n"u8.ToArray(), TraceStoreTests.ReadBack(r, end["sp ace/été/a.txt"]));
            Assert.Equal("sp ace/été/a.txt", end["link to a"].Target);
            Assert.Equal("before\n"u8.ToArray(), TraceStoreTests.ReadBack(r, r.StateAt(s, 0).Single(v => v.Rel == "old one.txt")));
            Assert.Contains(r.Events(s), e => e.Path == "new\nline");
        }
    }

    [Fact]
    public void A_symlink_target_and_a_root_that_are_not_UTF8_round_trip()
    {
        var root = "/tmp/" + Bad;
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var sid = w.BeginSession("test", "/", "test", 1, [root, "/other"], out var roots);
            w.AddVersion(sid, new NewVersion(w.PathId(roots[0], Bad), 1, 1, EntryKind.Symlink, 0x1FF, 0, 0, 0, 0, null, "../" + Bad, null));
            w.Commit();
        }

        using var r = TraceReader.Open(_dir.Sub("t"));
        var s = r.Session(null);
        Assert.Equal(root, s.Roots[0].Path);
        var v = r.StateAt(s, 1).Single();
        Assert.Equal(Bad, v.Rel);
        Assert.Equal("../" + Bad, v.Target);
        Assert.Equal(root + "/" + Bad, TraceReader.DisplayPath(s, v.RootId, v.Rel));
    }
}
