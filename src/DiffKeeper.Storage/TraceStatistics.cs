using DiffKeeper.Core;

namespace DiffKeeper.Storage;

/// <summary>One path's share of the store: the stored bytes of the blobs its versions brought in first.</summary>
public sealed record PathCost(long SessionId, string Path, long StoredBytes, long Versions);

/// <summary>What a trace holds and what it costs on disk.</summary>
public sealed record TraceStatistics(
    long Sessions,
    long Versions,
    long Blobs,
    long RawBytes,
    long UniqueBytes,
    long StoredBytes,
    long PackBytes,
    long CatalogBytes,
    IReadOnlyList<PathCost> TopPaths)
{
    /// <summary>Raw bytes of all file versions over the bytes of distinct chunks (how much deduplication saved).</summary>
    public double DedupRatio => UniqueBytes == 0 ? 1 : (double)RawBytes / UniqueBytes;

    /// <summary>Bytes of distinct chunks over what their pack records take.</summary>
    public double CompressionRatio => StoredBytes == 0 ? 1 : (double)UniqueBytes / StoredBytes;

    /// <summary>
    /// Reads the catalog once. A blob's stored bytes are charged to the first version (in catalog order) that
    /// references it, so the top paths are those that brought new content, not those that repeat it.
    /// </summary>
    public static TraceStatistics Compute(TraceReader reader, int top = 10)
    {
        using var snapshot = reader.Snapshot();
        var blobs = new Dictionary<long, (int Raw, int Stored)>();
        long unique = 0, stored = 0;
        foreach (var b in reader.AllBlobs())
        {
            blobs[b.BlobRowId] = (b.RawLength, b.StoredLength);
            unique += b.RawLength;
            stored += Packs.PackFormat.RecordSize(b.StoredLength);
        }

        var sessions = reader.Sessions().ToDictionary(s => s.Id);
        var charged = new HashSet<long>();
        var perPath = new Dictionary<(long Session, string Path), (long Stored, long Versions)>();
        long versions = 0, raw = 0;
        foreach (var v in reader.AllVersions())
        {
            versions++;
            var path = sessions.TryGetValue(v.SessionId, out var s) ? TraceReader.DisplayPath(s, v.RootId, v.Rel) : v.Rel;
            perPath.TryGetValue((v.SessionId, path), out var cost);
            cost.Versions++;
            if (v.Kind == EntryKind.File)
            {
                raw += v.Size;
                if (v.Extents is not null && ExtentMap.TryDecode(v.Extents, v.Size, out var extents))
                {
                    foreach (var e in extents)
                    {
                        if (charged.Add(e.BlobRowId) && blobs.TryGetValue(e.BlobRowId, out var b))
                        {
                            cost.Stored += Packs.PackFormat.RecordSize(b.Stored);
                        }
                    }
                }
            }

            perPath[(v.SessionId, path)] = cost;
        }

        var packBytes = reader.PacksCommitted().Sum(p => p.CommittedSize);
        var catalogBytes = new[] { "catalog.db", "catalog.db-wal" }
            .Select(f => new FileInfo(Path.Combine(reader.TraceDir, f)))
            .Where(f => f.Exists).Sum(f => f.Length);
        var topPaths = perPath.OrderByDescending(kv => kv.Value.Stored).ThenBy(kv => kv.Key.Path, StringComparer.Ordinal).Take(top)
            .Select(kv => new PathCost(kv.Key.Session, kv.Key.Path, kv.Value.Stored, kv.Value.Versions)).ToList();
        return new TraceStatistics(sessions.Count, versions, blobs.Count, raw, unique, stored, packBytes, catalogBytes, topPaths);
    }
}
