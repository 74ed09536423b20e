using DiffKeeper.Native.Interop;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>
/// The flock on &lt;trace&gt;/LOCK.readers: every reader takes it shared before it opens catalog.db and holds it for
/// as long as it is open; the writer deletes pack files that garbage collection unlinked from the catalog, and renames
/// a catalog rewritten in another page size over catalog.db (TraceWriter.CloseCatalog), only while it can hold it
/// exclusively, because a reader that started before may still read the pack, or hold the replaced catalog open. A
/// reader that cannot open the file (a read-only copy of a trace) runs without it: nothing deletes packs or renames
/// catalogs under a trace nobody can write.
/// </summary>
public sealed class ReaderLock : IDisposable
{
    private readonly SafeFileHandle? _handle;

    private ReaderLock(SafeFileHandle? handle) => _handle = handle;

    public static ReaderLock Acquire(string traceDir)
    {
        var handle = OpenFile(traceDir);
        if (handle is not null)
        {
            // Interrupted: again. Any other failure (ENOLCK on a file system without locks) runs without it, as a
            // reader that could not open the file does; a writer's exclusive flock there fails too, so it renames nothing.
            while (Libc.Flock((int)handle.DangerousGetHandle(), Libc.LOCK_SH) != 0 &&
                   System.Runtime.InteropServices.Marshal.GetLastPInvokeError() == Libc.EINTR)
            {
            }
        }

        return new ReaderLock(handle);
    }

    /// <summary>The exclusive lock when no reader holds the shared one, else null. Never waits.</summary>
    public static ReaderLock? TryExclusive(string traceDir)
    {
        var handle = OpenFile(traceDir);
        if (handle is null || Libc.Flock((int)handle.DangerousGetHandle(), Libc.LOCK_EX | Libc.LOCK_NB) != 0)
        {
            handle?.Dispose();
            return null;
        }

        return new ReaderLock(handle);
    }

    /// <summary>
    /// Creates LOCK.readers when it is missing (a writer opening the trace, before it makes a catalog); true when it
    /// was there already. A reader that found no LOCK.readers and could not create it (another user) runs without it:
    /// only a writer that saw the file there, or made the catalog after it, may rename a catalog under readers.
    /// </summary>
    public static bool Ensure(string traceDir)
    {
        var existed = File.Exists(Path.Combine(traceDir, "LOCK.readers"));
        OpenFile(traceDir)?.Dispose();
        return existed;
    }

    // open(2), not File.OpenHandle: .NET's own advisory lock on files it opens would interfere.
    private static SafeFileHandle? OpenFile(string traceDir)
    {
        var path = Path.Combine(traceDir, "LOCK.readers");
        var fd = Libc.Open(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, 0x1A4);
        if (fd < 0)
        {
            fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, 0);
        }

        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    public void Dispose() => _handle?.Dispose();
}
