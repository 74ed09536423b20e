using DiffKeeper.Core;

namespace DiffKeeper.Storage;

/// <summary>One path's share of the store: the stored bytes of the blobs its versions brought in first.</summary>
public sealed record PathCost(long SessionId, string Path, long StoredBytes, long Versions);

/// <summary>
/// The version whose rebuild decodes the most bytes per byte of the file (<see cref="RebuildCost"/>): its blobs and
/// their delta bases, each once, and of a slice's group the bytes up to the slice's end (a reader decodes no
/// further); <see cref="Deltas"/> is the longest delta chain it follows. The ratio counts a file under
/// <see cref="RebuildCost.Floor"/> as that size, as the rebuild bound does: decoding 64 KiB costs what decoding
/// less does, so a 1 KiB file sliced from a group reads as what it costs, not as a thousand times its size.
/// </summary>
public sealed record RebuildWorst(long SessionId, string Path, long VersionId, long Size, long DecodedBytes, int Deltas)
{
    public double Ratio => Size == 0 ? 0 : (double)DecodedBytes / Math.Max(Size, RebuildCost.Floor);
}

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
    IReadOnlyList<PathCost> TopPaths,
    RebuildWorst? WorstRebuild)
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
        var bases = new Dictionary<long, long[]>();
        var sliceEnds = new Dictionary<long, (long Group, long End)>();
        long unique = 0, stored = 0;
        foreach (var b in reader.AllBlobs())
        {
            blobs[b.BlobRowId] = (b.RawLength, (int)Packs.PackFormat.StoredBytes(b));
            if (b.IsSlice && b.Bases.Length == 1)
            {
                sliceEnds[b.BlobRowId] = (b.Bases[0], b.Offset + b.RawLength);
            }

            if (b.HasBases)
            {
                bases[b.BlobRowId] = b.Bases;
            }

            unique += b.Codec == Packs.BlobCodec.Group ? 0 : b.RawLength; // a group's bytes are its members'
            stored += Packs.PackFormat.StoredBytes(b);
        }

        // A slice is charged its share of its group's record, by raw length.
        foreach (var (row, groupRows) in bases)
        {
            if (blobs[row].Stored == 0 && groupRows.Length == 1 && blobs.TryGetValue(groupRows[0], out var g) && g.Raw > 0)
            {
                blobs[row] = (blobs[row].Raw, (int)((long)g.Stored * blobs[row].Raw / g.Raw));
            }
        }

        var sessions = reader.Sessions().ToDictionary(s => s.Id);
        var charged = new HashSet<long>();
        var perPath = new Dictionary<(long Session, string Path), (long Stored, long Versions)>();
        var closures = new Dictionary<long, HashSet<long>>();
        var depths = new Dictionary<long, int>();
        RebuildWorst? worst = null;
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
                            cost.Stored += b.Stored;
                        }
                    }

                    if (!v.Pruned && v.Size > 0)
                    {
                        var rebuild = Rebuild(v, path, extents, blobs, bases, sliceEnds, closures, depths);
                        if (worst is null || rebuild.Ratio > worst.Ratio || (rebuild.Ratio == worst.Ratio && rebuild.DecodedBytes > worst.DecodedBytes))
                        {
                            worst = rebuild;
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
        return new TraceStatistics(sessions.Count, versions, blobs.Count, raw, unique, stored, packBytes, catalogBytes, topPaths, worst);
    }

    /// <summary>What rebuilding one version decodes: the union of its blobs' closures (memoized per delta row).</summary>
    private static RebuildWorst Rebuild(Catalog.VersionRecord v, string path, List<Extent> extents, Dictionary<long, (int Raw, int Stored)> blobs,
        Dictionary<long, long[]> bases, Dictionary<long, (long Group, long End)> sliceEnds, Dictionary<long, HashSet<long>> closures,
        Dictionary<long, int> depths)
    {
        var decoded = new HashSet<long>();
        var deltas = 0;
        foreach (var e in extents)
        {
            if (!bases.ContainsKey(e.BlobRowId))
            {
                decoded.Add(e.BlobRowId);
                continue;
            }

            if (!closures.TryGetValue(e.BlobRowId, out var closure))
            {
                closures[e.BlobRowId] = closure = RebuildCost.Closure(e.BlobRowId, bases);
            }

            decoded.UnionWith(closure);
            deltas = Math.Max(deltas, Depth(e.BlobRowId, bases, depths));
        }

        // A group is decoded up to the end of the last of its slices this version reads.
        var groupEnds = new Dictionary<long, long>();
        foreach (var r in decoded)
        {
            if (sliceEnds.TryGetValue(r, out var slice))
            {
                groupEnds[slice.Group] = Math.Max(groupEnds.GetValueOrDefault(slice.Group), slice.End);
            }
        }

        var bytes = decoded.Sum(r => groupEnds.TryGetValue(r, out var end) ? end : blobs.TryGetValue(r, out var b) ? (long)b.Raw : 0);
        return new RebuildWorst(v.SessionId, path, v.Id, v.Size, bytes, deltas);
    }

    private static int Depth(long row, Dictionary<long, long[]> bases, Dictionary<long, int> memo)
    {
        if (memo.TryGetValue(row, out var known))
        {
            return known;
        }

        memo[row] = Packs.PackFormat.MaxDepth; // a cycle (a damaged catalog) reads as the deepest chain
        var depth = 0;
        if (bases.TryGetValue(row, out var next))
        {
            foreach (var b in next)
            {
                depth = Math.Max(depth, 1 + Depth(b, bases, memo));
            }
        }

        memo[row] = Math.Min(depth, Packs.PackFormat.MaxDepth);
        return memo[row];
    }
}
