using DiffKeeper.Remote;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// `push` reads a session's remote key from the catalog (SessionUploader.KeyOf) as every reader does: LOCK.readers
/// first, so a writer renaming a rewritten catalog over catalog.db (TraceWriter.CloseCatalog) never leaves it on the
/// replaced file.
/// </summary>
public sealed class SessionKeyLockTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void The_key_of_a_session_is_read_under_the_reader_lock()
    {
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        var (one, two) = (_dir.Sub("one"), _dir.Sub("two"));
        Cli.Ok(work, "record", "--trace", one, "-q", "--", "true");
        Cli.Ok(work, "record", "--trace", two, "-q", "--", "true");
        Cli.Ok(work, "record", "--trace", two, "-q", "--", "true");

        // Without the lock, KeyOf reads the replaced catalog, which has no session 2.
        var key = CatalogSwap.OpenWhileSwapped(one, Path.Combine(two, "catalog.db"), () => SessionUploader.KeyOf(one, 2));
        Assert.Equal(SessionUploader.KeyOf(one, 2), key);
    }
}
