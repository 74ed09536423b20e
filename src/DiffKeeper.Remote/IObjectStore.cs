namespace DiffKeeper.Remote;

/// <summary>One object of a listing: its key below the store's prefix, size and last modification time.</summary>
public readonly record struct ObjectInfo(string Key, long Size, DateTimeOffset LastModified);

/// <summary>
/// The object store a remote trace lives in, addressed by keys relative to its prefix (S3, or anything with the
/// same contract). Contract, as S3 gives it since December 2020: a put is atomic (an object is absent or whole, never
/// partial), a read after a completed put sees it, a listing after a completed put includes it. A create-only put
/// (<c>If-None-Match: *</c>) that finds the key taken reports false; a server that ignores the condition overwrites,
/// which the layout makes harmless (every name is either content-addressed or owned by one writer). Thread-safe.
/// Failures after the retries throw <see cref="Core.DiffKeeperException"/> (exit code 10) naming the request.
/// </summary>
public interface IObjectStore
{
    /// <summary>The object's bytes, or the <paramref name="length"/> bytes at <paramref name="offset"/>; null when absent.</summary>
    Task<byte[]?> GetAsync(string key, long offset = 0, long length = -1, CancellationToken cancel = default);

    /// <summary>
    /// Writes the <paramref name="length"/> bytes of the object at <paramref name="offset"/> into
    /// <paramref name="file"/> at the same offset; false when the object is absent. An object shorter than that is
    /// damage (exit 5). On failure some of the range may have been written: the caller writes it again or drops the file.
    /// </summary>
    async Task<bool> ReadIntoAsync(string key, long offset, long length, Microsoft.Win32.SafeHandles.SafeFileHandle file, CancellationToken cancel = default)
    {
        if (await GetAsync(key, offset, length, cancel).ConfigureAwait(false) is not { } bytes)
        {
            return false;
        }

        RandomAccess.Write(file, bytes, offset);
        return true;
    }

    /// <summary>Stores the object; with <paramref name="createOnly"/>, false when the key existed already.</summary>
    Task<bool> PutAsync(string key, ReadOnlyMemory<byte> body, bool createOnly, CancellationToken cancel = default);

    /// <summary>Every object whose key starts with <paramref name="prefix"/>, in key order.</summary>
    Task<List<ObjectInfo>> ListAsync(string prefix, CancellationToken cancel = default);

    /// <summary>Deletes the object; deleting an absent key succeeds.</summary>
    Task DeleteAsync(string key, CancellationToken cancel = default);

    /// <summary>Requests sent, bytes sent in bodies and bytes received in bodies, since the store was made.</summary>
    RequestCounters Counters { get; }

    /// <summary>How the store is named in messages (s3://bucket/prefix).</summary>
    string Name { get; }
}
