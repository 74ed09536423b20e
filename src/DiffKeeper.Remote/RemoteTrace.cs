using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Remote;

/// <summary>One session key of a remote store: its manifest objects, newest generation first, and the newest that reads.</summary>
public sealed record RemoteSession(string Key, SessionManifest? Manifest, IReadOnlyList<ObjectInfo> Generations);

/// <summary>
/// Reads a remote store through the local cache (docs/store-format.md, "Remote stores": reading): lists the
/// sessions, turns one into a cache trace (a trace in the local format whose packs are sparse mirrors of the remote
/// packs) and fetches the records it needs with parallel range reads. Every local reader then works on it unchanged.
/// </summary>
public sealed class RemoteTrace
{
    private const int MaxRangeBytes = 8 << 20;
    private const int MergeGap = 256 << 10;
    private readonly IObjectStore _store;

    public RemoteTrace(IObjectStore store, string cacheRoot)
    {
        _store = store;
        CacheDir = Path.Combine(cacheRoot, RemoteLayout.CacheName(store.Name));
    }

    /// <summary>This store's directory in the local cache.</summary>
    public string CacheDir { get; }

    /// <summary>
    /// The newest readable manifest generation of every session, in start order (session N is element N-1). A
    /// generation the bucket serves damaged (a server that is not atomic, killed mid-PUT) is passed over with a
    /// warning for the one before it; a session with none readable is left out, as one not published yet.
    /// </summary>
    public async Task<List<SessionManifest>> SessionsAsync(CancellationToken cancel) =>
        [.. (await ListAsync(cancel).ConfigureAwait(false)).Select(s => s.Manifest).OfType<SessionManifest>()];

    /// <summary>
    /// Every session key under <c>sessions/</c>, in start order, with all its manifest objects (newest generation
    /// first) and its newest readable manifest (null when none is: see <see cref="SessionsAsync"/>).
    /// </summary>
    public async Task<List<RemoteSession>> ListAsync(CancellationToken cancel)
    {
        var listing = await _store.ListAsync(RemoteLayout.SessionsPrefix, cancel).ConfigureAwait(false);
        var sessions = listing
            .Select(o => (Object: o, Name: RemoteLayout.ParseManifest(o.Key))).Where(m => m.Name is not null)
            .GroupBy(m => m.Name!.Value.Key)
            .Select(g => (Key: g.Key, Generations: g.OrderByDescending(m => m.Name!.Value.Generation).ToList()))
            .OrderBy(m => m.Key, StringComparer.Ordinal).ToList();
        var manifests = new SessionManifest?[sessions.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, sessions.Count), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancel }, async (i, ct) =>
        {
            foreach (var (_, m) in sessions[i].Generations)
            {
                try
                {
                    manifests[i] = await ManifestAsync(sessions[i].Key, m!.Value.Generation, ct).ConfigureAwait(false);
                    if (manifests[i] is not null)
                    {
                        return;
                    }

                    // else deleted since the listing
                }
                catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
                {
                    TraceReader.Warning?.Invoke($"{e.Message}. Skipped: the session's previous generation, if any, is shown");
                }
            }
        }).ConfigureAwait(false);
        return [.. sessions.Select((s, i) => new RemoteSession(s.Key, manifests[i], [.. s.Generations.Select(g => g.Object)]))];
    }

    /// <summary>One manifest generation, through the cache (a generation never changes); null when absent, exit 5 when damaged.</summary>
    public async Task<SessionManifest?> ManifestAsync(string key, long generation, CancellationToken cancel)
    {
        var name = RemoteLayout.Manifest(key, generation);
        var cached = Path.Combine(CacheDir, "manifests", key + "." + generation + ".json");
        var bytes = File.Exists(cached) ? await File.ReadAllBytesAsync(cached, cancel).ConfigureAwait(false)
            : await _store.GetAsync(name, cancel: cancel).ConfigureAwait(false);
        if (bytes is null)
        {
            return null;
        }

        var manifest = SessionManifest.Parse(name, bytes);
        if (!File.Exists(cached))
        {
            WriteAtomically(cached, bytes);
        }

        return manifest;
    }

    /// <summary>Session <paramref name="number"/> (from 1), or the latest; exit 3 when the store holds none, 8 when there is no such number.</summary>
    public async Task<SessionManifest> SessionAsync(long? number, CancellationToken cancel)
    {
        var sessions = await SessionsAsync(cancel).ConfigureAwait(false);
        if (sessions.Count == 0)
        {
            throw new DiffKeeperException(ExitCode.NoTrace, $"no session at {_store.Name} yet (no manifest under sessions/); push or record one first");
        }

        if (number is null)
        {
            return sessions[^1];
        }

        return number >= 1 && number <= sessions.Count
            ? sessions[(int)number - 1]
            : throw new DiffKeeperException(ExitCode.NotFound, $"{_store.Name} has no session {number}; it has sessions 1 to {sessions.Count}");
    }

    /// <summary>
    /// The cache trace of <paramref name="manifest"/> (its session is number 1 there), made from its segment when
    /// missing; with <paramref name="content"/>, every record the session's versions need is fetched first.
    /// </summary>
    public async Task<string> OpenAsync(SessionManifest manifest, bool content, CancellationToken cancel)
    {
        var dir = Path.Combine(CacheDir, "sessions", manifest.Key + "." + manifest.Generation);
        if (!File.Exists(Path.Combine(dir, "catalog.db")))
        {
            await BuildAsync(manifest, dir, cancel).ConfigureAwait(false);
        }

        if (content && !File.Exists(Path.Combine(dir, "complete")))
        {
            await FetchAsync(dir, cancel).ConfigureAwait(false);
            WriteAtomically(Path.Combine(dir, "complete"), []);
        }

        return dir;
    }

    /// <summary>Deletes what this machine's cache holds of session <paramref name="key"/> (its session was forgotten).</summary>
    public void DropCached(string key)
    {
        try
        {
            var sessions = Path.Combine(CacheDir, "sessions");
            foreach (var dir in Directory.Exists(sessions) ? Directory.EnumerateDirectories(sessions, key + ".*") : [])
            {
                Directory.Delete(dir, recursive: true);
            }

            var manifests = Path.Combine(CacheDir, "manifests");
            foreach (var file in Directory.Exists(manifests) ? Directory.EnumerateFiles(manifests, key + ".*") : [])
            {
                File.Delete(file);
            }
        }
        catch (IOException)
        {
            // a reader has it open or made it again: the cache may hold anything, the bucket decides what is listed
        }
    }

    private async Task BuildAsync(SessionManifest manifest, string dir, CancellationToken cancel)
    {
        var name = RemoteLayout.Segment(manifest.Segment);
        var segment = await _store.GetAsync(name, cancel: cancel).ConfigureAwait(false)
            ?? throw new DiffKeeperException(ExitCode.Corrupt, $"{_store.Name}/{name}, named by session {manifest.Key}, is missing");
        if (RemoteLayout.Sha(segment) != manifest.Segment)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{_store.Name}/{name} does not hash to its name: it is damaged");
        }

        // A delta segment needs its base: the one the manifest names, whole (docs/store-format.md, "delta segment").
        byte[]? baseDatabase = null;
        if (SegmentDatabase.IsDelta(name, segment))
        {
            if (manifest.SegmentBase is not { } baseSha)
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"{_store.Name}/{name} is a delta, but session {manifest.Key}'s manifest names no base for it: it is damaged");
            }

            if (SegmentDatabase.NamedBase(segment) is { } named && named != baseSha)
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"{_store.Name}/{name} is a delta against {named[..16]}…, which session {manifest.Key}'s manifest does not name: it is damaged");
            }

            baseDatabase = await new SegmentBases(_store, CacheDir).DatabaseAsync(baseSha, name, cancel).ConfigureAwait(false);
        }
        else if (manifest.SegmentBase is not null)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"session {manifest.Key}'s manifest names a segment base, but {_store.Name}/{name} is whole: the manifest is damaged");
        }
        else
        {
            new SegmentBases(_store, CacheDir).Keep(manifest.Segment, segment); // the base of this machine's next uploads
        }

        var temp = dir + "." + Environment.ProcessId + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        Directory.CreateDirectory(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        await File.WriteAllBytesAsync(Path.Combine(temp, "catalog.db"), SegmentDatabase.Unpack(name, segment, baseDatabase), cancel).ConfigureAwait(false);
        var header = new byte[PackFormat.HeaderSize];
        PackFormat.WriteFileHeader(header);
        foreach (var (id, _, size) in RemotePacks(temp))
        {
            var path = Path.Combine(temp, PackFormat.RelativePath(id));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            using var h = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
            RandomAccess.SetLength(h, size);
            RandomAccess.Write(h, header, 0);
        }

        try
        {
            Directory.Move(temp, dir);
        }
        catch (IOException) when (File.Exists(Path.Combine(dir, "catalog.db")))
        {
            Directory.Delete(temp, recursive: true); // another process made it first
        }
    }

    /// <summary>Range reads of every record the cache trace's blob rows name, merged per pack and fetched 8 at a time, each streamed into its mirror.</summary>
    private async Task FetchAsync(string dir, CancellationToken cancel)
    {
        var packs = RemotePacks(dir).ToDictionary(p => p.Id);
        var ranges = new List<(long Pack, long Start, long End)>();
        foreach (var group in BlobRanges(dir).GroupBy(b => b.Pack))
        {
            long start = -1, end = -1;
            foreach (var (_, s, e) in group.OrderBy(b => b.Start))
            {
                if (start >= 0 && s <= end + MergeGap && e - start <= MaxRangeBytes)
                {
                    end = Math.Max(end, e);
                    continue;
                }

                if (start >= 0)
                {
                    ranges.Add((group.Key, start, end));
                }

                (start, end) = (s, e);
            }

            if (start >= 0)
            {
                ranges.Add((group.Key, start, end));
            }
        }

        await Parallel.ForEachAsync(ranges.OrderByDescending(r => r.End - r.Start), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancel }, async (r, ct) =>
        {
            var (_, name, size) = packs[r.Pack];
            if (r.End > size)
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"a blob of the segment lies past the end of remote pack {name}");
            }

            using var h = File.OpenHandle(Path.Combine(dir, PackFormat.RelativePath(r.Pack)), FileMode.Open, FileAccess.Write);
            if (!await _store.ReadIntoAsync(RemoteLayout.Pack(name), r.Start, r.End - r.Start, h, ct).ConfigureAwait(false))
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"{_store.Name}/{RemoteLayout.Pack(name)} is missing");
            }
        }).ConfigureAwait(false);
    }

    private static List<(long Id, string Name, long Size)> RemotePacks(string dir)
    {
        using var db = SqliteDatabase.Open(Path.Combine(dir, "catalog.db"), readOnly: true);
        using var r = db.Prepare("SELECT id, name, size FROM remote_packs ORDER BY id");
        var list = new List<(long, string, long)>();
        while (r.Step())
        {
            var name = r.String(1);
            if (name.Length != 64 || !name.All(char.IsAsciiHexDigitLower))
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"the cached segment at {dir} names a pack '{name}' that is no SHA-256");
            }

            list.Add((r.Int64(0), name, r.Int64(2)));
        }

        return list;
    }

    private static List<(long Pack, long Start, long End)> BlobRanges(string dir)
    {
        using var db = SqliteDatabase.Open(Path.Combine(dir, "catalog.db"), readOnly: true);
        using var r = db.Prepare("SELECT pack_id, offset, stored_len FROM blobs");
        var list = new List<(long, long, long)>();
        while (r.Step())
        {
            list.Add((r.Int64(0), r.Int64(1), r.Int64(1) + PackFormat.RecordSize(r.Int32(2))));
        }

        return list;
    }

    private static void WriteAtomically(string path, byte[] bytes)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        var temp = path + "." + Environment.ProcessId + ".tmp";
        File.WriteAllBytes(temp, bytes);
        File.Move(temp, path, overwrite: true);
    }
}
