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

    public RemoteBlobSummary(IObjectStore store, string cacheDir)
    {
        _store = store;
        _cacheDir = Path.Combine(cacheDir, "index");
    }

    public DateTimeOffset RefreshedAt { get; private set; } = DateTimeOffset.MinValue;

    public int Count => _blobs.Count;

    public bool TryGet(BlobId id, out RemoteBlob blob) => _blobs.TryGetValue(id, out blob);

    public long PackSize(string pack) => _packSizes[pack];

    public void Add(string pack, long packSize, IEnumerable<RemoteBlob> records)
    {
        _packSizes[pack] = packSize;
        foreach (var r in records)
        {
            _blobs.TryAdd(r.Id, r);
        }
    }

    /// <summary>Lists <c>index/</c> and loads every index not loaded yet (from the cache, else the bucket, 8 at a time).</summary>
    public async Task RefreshAsync(CancellationToken cancel)
    {
        var started = DateTimeOffset.UtcNow;
        var listing = await _store.ListAsync(RemoteLayout.IndexPrefix, cancel).ConfigureAwait(false);
        var missing = listing
            .Select(o => o.Key[RemoteLayout.IndexPrefix.Length..])
            .Where(n => n.EndsWith(".idx", StringComparison.Ordinal))
            .Select(n => n[..^4])
            .Where(n => !_packSizes.ContainsKey(n))
            .ToList();
        Directory.CreateDirectory(_cacheDir);
        var loaded = new (string Pack, byte[]? Bytes)[missing.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, missing.Count), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = cancel }, async (i, ct) =>
        {
            var pack = missing[i];
            var cached = Path.Combine(_cacheDir, pack + ".idx");
            if (File.Exists(cached))
            {
                loaded[i] = (pack, await File.ReadAllBytesAsync(cached, ct).ConfigureAwait(false));
                return;
            }

            var bytes = await _store.GetAsync(RemoteLayout.Index(pack), cancel: ct).ConfigureAwait(false);
            if (bytes is not null)
            {
                var temp = cached + "." + Environment.ProcessId + ".tmp";
                await File.WriteAllBytesAsync(temp, bytes, ct).ConfigureAwait(false);
                File.Move(temp, cached, overwrite: true);
            }

            loaded[i] = (pack, bytes);
        }).ConfigureAwait(false);
        foreach (var (pack, bytes) in loaded)
        {
            if (bytes is not null)
            {
                var records = PackIndex.Decode(pack, bytes);
                Add(pack, System.Buffers.Binary.BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16)), records);
            }
        }

        RefreshedAt = started;
    }
}
