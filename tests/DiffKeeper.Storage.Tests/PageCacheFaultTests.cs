using System.Globalization;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A catalog connection's page cache starts empty (SQLITE_CONFIG_PAGECACHE with no bulk, <see cref="SqliteDatabase"/>):
/// its first query maps the pages it reads, not a bulk of 20 cache lines whose headers SQLite wrote at once, a page
/// fault each (Debian's SQLITE_DEFAULT_PCACHE_INITSZ; ~20 faults a connection, several connections a `record`).
/// Counted with this thread's minor faults on the real kernel and glibc, whose mmap threshold is pinned at its
/// default: with 16 KiB pages the bulk (~330 KB) is a fresh mapping at every open, while the lines of a cache without
/// it come from the heap, where the third open finds what the first freed. Runs alone: the threshold is the process's.
/// </summary>
[Collection(nameof(PageCacheFaultTests))]
[CollectionDefinition(nameof(PageCacheFaultTests), DisableParallelization = true)]
public sealed class PageCacheFaultTests
{
    [Fact]
    public void A_connection_reads_a_small_catalog_without_a_bulk_page_cache()
    {
        Assert.Equal(1, Libc.Mallopt(Libc.M_MMAP_THRESHOLD, 128 << 10));
        using var dir = new TempDir();
        var path = dir.Sub("catalog.db");
        using (var db = SqliteDatabase.Create(path))
        {
            db.Execute("PRAGMA page_size=16384; VACUUM; CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t (name) VALUES ('a'), ('b'), ('c');");
        }

        var faults = long.MaxValue;
        for (var i = 0; i < 3; i++) // the least of three: a first open faults in code, and the heap grows
        {
            var before = MinorFaults();
            using (var db = SqliteDatabase.Open(path, readOnly: true))
            using (var count = db.Prepare("SELECT count(*) FROM t"))
            {
                Assert.Equal(3, count.ScalarInt64());
            }

            faults = Math.Min(faults, MinorFaults() - before);
        }

        Assert.True(faults < 12, $"opening a catalog of two 16 KiB pages and counting its rows faulted {faults} pages at best of three");
    }

    // Field 10 of /proc/thread-self/stat (minflt), counted after the command name's closing parenthesis.
    private static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture);
    }
}
