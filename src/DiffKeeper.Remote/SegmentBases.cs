using DiffKeeper.Core;

namespace DiffKeeper.Remote;

/// <summary>
/// Whole segment objects kept in the local cache (<c>&lt;cache&gt;/&lt;store&gt;/bases/&lt;sha&gt;.seg</c>) as the
/// bases of delta segments, for writers and readers alike (docs/store-format.md, "Remote stores": delta segment).
/// A kept object is checked against its name at every use, so a damaged cache costs a download, never a wrong
/// catalog.
/// </summary>
public sealed class SegmentBases(IObjectStore store, string cacheDir)
{
    private string Dir => Path.Combine(cacheDir, "bases");

    /// <summary>
    /// The database of the whole segment <paramref name="sha"/>: from the cache, else fetched and kept. A base that
    /// is missing, does not hash to its name or is itself a delta is damage (exit 5) naming <paramref name="neededBy"/>.
    /// </summary>
    public async Task<byte[]> DatabaseAsync(string sha, string neededBy, CancellationToken cancel)
    {
        var name = RemoteLayout.Segment(sha);
        if (Held(sha) is { } held)
        {
            return SegmentDatabase.Unpack(name, held);
        }

        var segment = await store.GetAsync(name, cancel: cancel).ConfigureAwait(false)
            ?? throw new DiffKeeperException(ExitCode.Corrupt, $"{store.Name}/{name}, the base of {neededBy}, is missing");
        if (RemoteLayout.Sha(segment) != sha)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{store.Name}/{name} does not hash to its name: it is damaged");
        }

        if (SegmentDatabase.IsDelta(name, segment))
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{store.Name}/{name}, the base of {neededBy}, is itself a delta: a base must be whole");
        }

        var database = SegmentDatabase.Unpack(name, segment);
        Keep(sha, segment);
        return database;
    }

    /// <summary>Keeps the whole segment object <paramref name="segment"/> (named <paramref name="sha"/>) in the cache.</summary>
    public void Keep(string sha, byte[] segment)
    {
        try
        {
            Directory.CreateDirectory(Dir);
            var path = Path.Combine(Dir, sha + ".seg");
            var temp = path + "." + Environment.ProcessId + ".tmp";
            File.WriteAllBytes(temp, segment);
            File.Move(temp, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a cache that cannot be written costs the next upload a whole segment, nothing else
        }
    }

    /// <summary>The name of the newest base the cache holds, or null.</summary>
    public string? Newest() =>
        Directory.Exists(Dir)
            ? new DirectoryInfo(Dir).EnumerateFiles("*.seg").OrderByDescending(f => f.LastWriteTimeUtc)
                .Select(f => f.Name[..^4]).FirstOrDefault(n => RemoteLayout.ObjectSha(RemoteLayout.Segment(n), RemoteLayout.SegmentsPrefix, ".seg") is not null)
            : null;

    /// <summary>Forgets a base the bucket no longer has.</summary>
    public void Drop(string sha)
    {
        try
        {
            File.Delete(Path.Combine(Dir, sha + ".seg"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // left: it is checked against the bucket before every use as a writer's base
        }
    }

    /// <summary>The kept object <paramref name="sha"/> when it is there, whole and undamaged (else it is dropped).</summary>
    private byte[]? Held(string sha)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(Path.Combine(Dir, sha + ".seg"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        try
        {
            if (RemoteLayout.Sha(bytes) == sha && !SegmentDatabase.IsDelta(sha, bytes))
            {
                return bytes;
            }
        }
        catch (DiffKeeperException)
        {
            // a bad header: dropped below
        }

        Drop(sha);
        return null;
    }
}
