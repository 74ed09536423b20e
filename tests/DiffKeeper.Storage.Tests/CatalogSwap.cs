namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Replays the moment a closing writer renames a rewritten catalog over catalog.db (TraceWriter.CloseCatalog): this
/// test holds LOCK.readers exclusively as that writer does, starts <c>open</c> on another thread, waits until the
/// kernel lists it waiting for the lock (/proc/locks), renames <c>replacement</c> over catalog.db and releases the
/// lock. An opener that takes the lock before it opens the catalog sees the replacement; one that opened the file
/// first keeps reading the replaced one.
/// </summary>
public static class CatalogSwap
{
    public static T OpenWhileSwapped<T>(string trace, string replacement, Func<T> open)
    {
        var task = default(Task<T>);
        using (var readers = ReaderLock.TryExclusive(trace) ?? throw new InvalidOperationException($"a reader holds {trace}"))
        {
            var ino = LockInode(trace);
            task = Task.Run(open);
            var deadline = DateTime.UtcNow.AddMinutes(1);
            while (!Waiting(ino) && !task.IsCompleted)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException("the opener never waited for LOCK.readers");
                }

                Thread.Sleep(2);
            }

            File.Move(replacement, Path.Combine(trace, "catalog.db"), overwrite: true);
        }

        return task.GetAwaiter().GetResult();
    }

    private static ulong LockInode(string trace)
    {
        Assert.Equal(0, Native.Interop.Libc.StatxCall(Native.Interop.Libc.AT_FDCWD, Path.Combine(trace, "LOCK.readers"), 0,
            Native.Interop.Libc.STATX_BASIC_STATS, out var st));
        return st.Ino;
    }

    // A blocked flock waiter is listed as "N: -> FLOCK  ADVISORY  READ  pid maj:min:inode 0 EOF".
    private static bool Waiting(ulong ino) =>
        File.ReadLines("/proc/locks").Any(l => l.Contains("-> FLOCK", StringComparison.Ordinal) &&
            l.Contains(string.Create(System.Globalization.CultureInfo.InvariantCulture, $":{ino} "), StringComparison.Ordinal));
}
