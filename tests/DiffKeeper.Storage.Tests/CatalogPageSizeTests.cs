using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A small catalog is rewritten in 1 KiB pages when its writer closes, a large one back in 4 KiB pages
/// (<c>TraceWriter.CloseCatalog</c>); never while a reader holds the trace; a copy a kill left is removed; every
/// session reads back across the changes.
/// </summary>
public sealed class CatalogPageSizeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static (long PageSize, string Mode, long Bytes) Catalog(string trace)
    {
        var path = Path.Combine(trace, "catalog.db");
        using var db = SqliteDatabase.Open(path, readOnly: true);
        using var q = db.Prepare("SELECT page_size, journal_mode FROM pragma_page_size(), pragma_journal_mode()");
        Assert.True(q.Step());
        return (q.Int64(0), q.String(1), new FileInfo(path).Length);
    }

    [Fact]
    public void A_small_catalog_is_kept_in_1_KiB_pages_and_a_large_one_in_4_KiB()
    {
        var trace = _dir.Sub("t");
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("a.txt", "hello"u8.ToArray()));
        }

        Assert.False(File.Exists(Path.Combine(trace, "catalog.db-wal")));
        Assert.False(File.Exists(Path.Combine(trace, TraceWriter.ResizedCatalog)));
        var (pageSize, mode, bytes) = Catalog(trace);
        Assert.Equal(1024, pageSize);
        Assert.Equal("wal", mode); // a writer beside readers never waits for them
        Assert.True(bytes < 40 << 10, $"{bytes} bytes");

        // Grown past LargeCatalog in 1 KiB pages: back in 4 KiB pages when the writer closes.
        var deep = string.Join('/', Enumerable.Repeat(new string('x', 200), 10));
        var files = Enumerable.Range(0, 2_000).Select(i => ($"d{i:D6}/{deep}", new byte[] { (byte)i })).ToArray();
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, files);
        }

        (pageSize, _, bytes) = Catalog(trace);
        Assert.Equal(4096, pageSize);
        Assert.True(bytes >= TraceWriter.LargeCatalog / 2, $"{bytes} bytes");

        using var r = TraceReader.Open(trace);
        Assert.Equal(2, r.Sessions().Count);
        Assert.Equal(2_001, r.AllVersions().Count(v => v.Kind == Core.EntryKind.File));
    }

    [Fact]
    public void A_reader_keeps_the_catalog_as_it_is_and_a_copy_a_kill_left_is_removed()
    {
        var trace = _dir.Sub("t");
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("a.txt", "hello"u8.ToArray()));
        }

        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            db.Execute("PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM; PRAGMA journal_mode=WAL;");
        }

        Assert.Equal(4096, Catalog(trace).PageSize);
        using (var r = TraceReader.Open(trace))
        {
            using (var w = TraceWriter.Open(trace))
            {
                TraceStoreTests.WriteSession(w, _dir.Path, ("a.txt", "hello again"u8.ToArray()));
            }

            Assert.Equal(2, r.Sessions().Count);
        }

        Assert.Equal(4096, Catalog(trace).PageSize); // the reader held the trace when the writer closed

        var stale = Path.Combine(trace, TraceWriter.ResizedCatalog);
        File.WriteAllBytes(stale, new byte[100]); // half a copy
        using (var w = TraceWriter.Open(trace))
        {
            Assert.False(File.Exists(stale));
            TraceStoreTests.WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
        }

        Assert.Equal(1024, Catalog(trace).PageSize);
        using (var r = TraceReader.Open(trace))
        {
            Assert.Equal(3, r.Sessions().Count);
            var b = Assert.Single(r.AllVersions(), v => v.Kind == Core.EntryKind.File && v.SessionId == 3);
            Assert.Equal("again"u8.ToArray(), TraceStoreTests.ReadBack(r, b));
        }
    }
}
