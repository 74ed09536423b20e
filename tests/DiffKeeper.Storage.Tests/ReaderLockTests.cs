namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A reader takes LOCK.readers before it opens catalog.db (TraceReader.Open): a writer that renames a rewritten
/// catalog over it while it holds the lock exclusively (TraceWriter.CloseCatalog) never leaves a reader on the
/// replaced file, sharing a -wal and -shm with the new one.
/// </summary>
public sealed class ReaderLockTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Written(string name, params string[] contents) => TraceStoreTests.Written(_dir, name, contents);

    [Fact]
    public void A_reader_takes_LOCK_readers_before_it_opens_the_catalog_so_it_reads_the_one_renamed_in()
    {
        var one = Written("one", "first");
        var two = Written("two", "first", "second");
        var sessions = CatalogSwap.OpenWhileSwapped(one, Path.Combine(two, "catalog.db"), () =>
        {
            using var r = TraceReader.Open(one);
            return r.Sessions().Count;
        });

        Assert.Equal(2, sessions); // a reader that opened the catalog first would still read the replaced file: 1
    }
}
