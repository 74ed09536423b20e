using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A small catalog is rewritten in 1 KiB pages when its writer closes, a large one back in 4 KiB pages
/// (<c>TraceWriter.CloseCatalog</c>); never renamed while a reader holds the trace; the copy keeps the catalog's mode
/// and owner; a copy a kill left is removed with its journal files; no rename under a reader that may run without
/// LOCK.readers; every session reads back across the changes.
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

    /// <summary>Puts the trace's catalog back in 4 KiB pages, as every catalog a writer before 1 KiB pages left.</summary>
    private static void InFourKiBPages(string trace)
    {
        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            db.Execute("PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM; PRAGMA journal_mode=WAL;");
        }

        Assert.Equal(4096, Catalog(trace).PageSize);
    }

    private string Written(string name, params string[] contents) => TraceStoreTests.Written(_dir, name, contents);

    [Fact]
    public void A_small_catalog_is_kept_in_1_KiB_pages_and_a_large_one_in_4_KiB()
    {
        var trace = Written("t", "hello");
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
    public void A_reader_keeps_the_catalog_as_it_is_and_a_copy_a_kill_left_is_removed_with_its_journals()
    {
        var trace = Written("t", "hello");
        InFourKiBPages(trace);
        using (var r = TraceReader.Open(trace))
        {
            using (var w = TraceWriter.Open(trace))
            {
                TraceStoreTests.WriteSession(w, _dir.Path, ("a.txt", "hello again"u8.ToArray()));
            }

            Assert.Equal(2, r.Sessions().Count);
        }

        Assert.Equal(4096, Catalog(trace).PageSize); // the reader held the trace when the writer closed
        Assert.Empty(Directory.GetFiles(trace, TraceWriter.ResizedCatalog + "*"));

        // Half a copy and the journal files of one, as a kill during the copy leaves them.
        var stale = Path.Combine(trace, TraceWriter.ResizedCatalog);
        foreach (var suffix in new[] { "", "-journal", "-wal", "-shm" })
        {
            File.WriteAllBytes(stale + suffix, new byte[100]);
        }

        using (var w = TraceWriter.Open(trace))
        {
            Assert.Empty(Directory.GetFiles(trace, TraceWriter.ResizedCatalog + "*"));
            TraceStoreTests.WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
        }

        Assert.Equal(1024, Catalog(trace).PageSize);
        Assert.Empty(Directory.GetFiles(trace, TraceWriter.ResizedCatalog + "*"));
        using (var r = TraceReader.Open(trace))
        {
            Assert.Equal(3, r.Sessions().Count);
            var b = Assert.Single(r.AllVersions(), v => v.Kind == Core.EntryKind.File && v.SessionId == 3);
            Assert.Equal("again"u8.ToArray(), TraceStoreTests.ReadBack(r, b));
        }
    }

    [Fact]
    public void The_rewritten_catalog_keeps_the_mode_and_owner_of_the_one_it_replaces()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("giving a file to another user needs root");
        }

        var trace = Written("t", "hello");
        InFourKiBPages(trace);
        var catalog = Path.Combine(trace, "catalog.db");
        File.SetUnixFileMode(catalog, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead); // 640
        using (var h = File.OpenHandle(catalog, FileMode.Open, FileAccess.ReadWrite))
        {
            Assert.Equal(0, Native.Interop.Libc.Fchown((int)h.DangerousGetHandle(), 4321, 8765));
        }

        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
        }

        Assert.Equal(1024, Catalog(trace).PageSize); // rewritten
        Assert.Equal(0, Native.Interop.Libc.StatxCall(Native.Interop.Libc.AT_FDCWD, catalog, Native.Interop.Libc.AT_SYMLINK_NOFOLLOW,
            Native.Interop.Libc.STATX_BASIC_STATS, out var st));
        Assert.Equal("640", Convert.ToString(st.Mode & 0xFFF, 8));
        Assert.Equal((4321u, 8765u), (st.Uid, st.Gid));
    }

    [Fact]
    public void A_catalog_some_reader_could_open_without_LOCK_readers_is_left_as_it_is()
    {
        // LOCK.readers 0600 of another owner beside a catalog anyone may read: a reader of a third user opens the
        // catalog without the lock, so no rename may be made under it.
        if (Environment.UserName != "root")
        {
            Assert.Skip("giving a file to another user needs root");
        }

        var trace = Written("t", "hello");
        InFourKiBPages(trace);
        var readers = Path.Combine(trace, "LOCK.readers");
        File.SetUnixFileMode(readers, UnixFileMode.UserRead | UnixFileMode.UserWrite); // 600
        using (var h = File.OpenHandle(readers, FileMode.Open, FileAccess.ReadWrite))
        {
            Assert.Equal(0, Native.Interop.Libc.Fchown((int)h.DangerousGetHandle(), 4321, 8765));
        }

        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
        }

        Assert.Equal(4096, Catalog(trace).PageSize);
    }

    [Fact]
    public void A_writer_that_had_to_create_LOCK_readers_under_an_existing_catalog_leaves_the_catalog_as_it_is()
    {
        // A reader of another user that found no LOCK.readers and could not create it reads without it: this writer
        // cannot tell it is not there, so it renames nothing; the next writer found the file and may.
        var trace = Written("t", "hello");
        InFourKiBPages(trace);
        File.Delete(Path.Combine(trace, "LOCK.readers"));
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("b.txt", "again"u8.ToArray()));
        }

        Assert.True(File.Exists(Path.Combine(trace, "LOCK.readers")));
        Assert.Equal(4096, Catalog(trace).PageSize);
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("c.txt", "and again"u8.ToArray()));
        }

        Assert.Equal(1024, Catalog(trace).PageSize);
    }
}
