using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Remote;

/// <summary>
/// Every blob known to be in the bucket, from the pack indexes: the dedup lookup of an upload. The indexes are kept
/// in the local cache (<c>&lt;cache&gt;/&lt;store&gt;/index/</c>), so a refresh costs one listing of <c>index/</c>
/// plus one GET per index written since, not a request per blob. Not thread-safe.
/// </summary>
public sealed class RemoteBlobSummary
{
    private readonly IObjectStore _store;
    private readonly string _cacheDir;
    private readonly Dictionary<BlobId, RemoteBlob> _blobs = [];
    private readonly Dictionary<string, long> _packSizes = new(StringComparer.Ordinal);
    private readonly HashSet<string> _unreadable = new(StringComparer.Ordinal);

    public RemoteBlobSummary(IObjectStore store, string cacheDir)
    {
        _store = store;
        _cacheDir = Path.Combine(cacheDir, "index");
    }

    public DateTimeOffset RefreshedAt { get; private set; } = DateTimeOffset.MinValue;

    public int Count => _blobs.Count;

    public bool TryGet(BlobId id, out RemoteBlob blob) => _blobs.TryGetValue(id, out blob);

    public long PackSize(string pack) => _packSizes[pack];

    /// <summary>Whether <paramref name="pack"/>'s index was listed by the last refresh or added since.</summary>
    public bool Has(string pack) => _packSizes.ContainsKey(pack);

    public void Add(string pack, long packSize, IEnumerable<RemoteBlob> records)
    {
        _packSizes[pack] = packSize;
        _unreadable.Remove(pack);
        foreach (var r in records)
        {
            _blobs.TryAdd(r.Id, r);
        }
    }

    /// <summary>
    /// Lists <c>index/</c> and loads every index not loaded yet (from the cache, else the bucket, 8 at a time). An
    /// index the bucket serves damaged (a server that is not atomic, killed mid-PUT, leaves one) is skipped with a
    /// warning: its blobs are then unknown here and an upload stores them again, which costs bytes, never exactness.
    /// A pack whose index is no longer listed (`forget` deleted it) is dropped with its blobs, so the summary says
    /// what the bucket held at <see cref="RefreshedAt"/>, not what it once held.
    /// </summary>
    public async Task RefreshAsync(CancellationToken cancel)
    {
        var started = DateTimeOffset.UtcNow;
        var listing = await _store.ListAsync(RemoteLayout.IndexPrefix, cancel).ConfigureAwait(false);
        var listed = listing
            .Select(o => o.Key[RemoteLayout.IndexPrefix.Length..])
            .Where(n => n.EndsWith(".idx", StringComparison.Ordinal))
            .Select(n => n[..^4])
            .ToHashSet(StringComparer.Ordinal);
        Directory.CreateDirectory(_cacheDir);
        DropVanished(listed);
        var missing = listed.Where(n => !_packSizes.ContainsKey(n) && !_unreadable.Contains(n)).Order(StringComparer.Ordinal).ToList();
        var loaded = new (string Pack, byte[]? Bytes, List<RemoteBlob>? Records, string? Damage)[missing.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, missing.Count), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancel }, async (i, ct) =>
        {
            var pack = missing[i];
            var cached = Path.Combine(_cacheDir, pack + ".idx");
            if (File.Exists(cached))
            {
                var bytes = await File.ReadAllBytesAsync(cached, ct).ConfigureAwait(false);
                if (TryDecode(pack, bytes, out var records, out _))
                {
                    loaded[i] = (pack, bytes, records, null);
                    return;
                }

                File.Delete(cached); // damaged in the cache: read it again from the bucket
            }

            try
            {
                var bytes = await _store.GetAsync(RemoteLayout.Index(pack), cancel: ct).ConfigureAwait(false);
                if (bytes is null)
                {
                    return; // deleted since the listing
                }

                if (!TryDecode(pack, bytes, out var records, out var damage))
                {
                    loaded[i] = (pack, null, null, damage);
                    return;
                }

                var temp = cached + "." + Environment.ProcessId + "." + i + ".tmp";
                await File.WriteAllBytesAsync(temp, bytes, ct).ConfigureAwait(false);
                File.Move(temp, cached, overwrite: true);
                loaded[i] = (pack, bytes, records, null);
            }
            catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
            {
                loaded[i] = (pack, null, null, e.Message);
            }
        }).ConfigureAwait(false);
        foreach (var (pack, bytes, records, damage) in loaded)
        {
            if (damage is not null)
            {
                _unreadable.Add(pack);
                TraceReader.Warning?.Invoke($"{damage}. Skipped: the blobs it lists are uploaded again where a session needs them");
            }
            else if (records is not null)
            {
                Add(pack, BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16)), records);
            }
        }

        RefreshedAt = started;
    }

    private void DropVanished(HashSet<string> listed)
    {
        var gone = _packSizes.Keys.Where(p => !listed.Contains(p)).ToHashSet(StringComparer.Ordinal);
        _unreadable.IntersectWith(listed);
        if (gone.Count == 0)
        {
            return;
        }

        foreach (var pack in gone)
        {
            _packSizes.Remove(pack);
            File.Delete(Path.Combine(_cacheDir, pack + ".idx"));
        }

        foreach (var id in _blobs.Where(b => gone.Contains(b.Value.Pack)).Select(b => b.Key).ToList())
        {
            _blobs.Remove(id);
        }
    }

    private static bool TryDecode(string pack, byte[] bytes, out List<RemoteBlob>? records, out string? damage)
    {
        try
        {
            records = PackIndex.Decode(pack, bytes);
            damage = null;
            return true;
        }
        catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
        {
            records = null;
            damage = e.Message;
            return false;
        }
    }
}
