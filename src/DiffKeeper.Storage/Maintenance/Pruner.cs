using DiffKeeper.Core;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Which versions <see cref="Pruner"/> keeps. At least one of <see cref="KeepLast"/>, <see cref="KeepWithinNs"/> and
/// <see cref="DropOldestBytes"/> is set. With both of the first two, a version either of them keeps is kept
/// (<c>prune</c>), or, with <see cref="BothLimit"/>, only a version both keep (keep mode's retention:
/// <c>--max-versions</c> and <c>--retain</c> are two limits). <see cref="DropOldestBytes"/> (the ring of
/// <c>record --max-trace-size</c>) drops the oldest file versions of the whole trace, by wall-clock time, until their
/// sizes add up to that many bytes, and marks each session it touched with the meta row
/// <see cref="SizeLimitKeyPrefix"/>N = <see cref="Note"/>.
/// </summary>
public sealed record PrunePolicy(int? KeepLast, long? KeepWithinNs, Glob? Path = null, long? SessionId = null, bool BothLimit = false)
{
    /// <summary>Meta key prefix of a session some of whose contents the size limit dropped; the value says which limit.</summary>
    public const string SizeLimitKeyPrefix = "contents_dropped_by_size_limit.";

    public long? DropOldestBytes { get; init; }

    public string? Note { get; init; }
}

/// <summary>
/// Marks file versions pruned (docs/store-format.md, "Compaction, prune and garbage collection"): per logical
/// path, versions outside the policy lose their content. The newest version of a path is never pruned, whatever
/// the policy says, so the latest state always restores. The bytes are freed by the garbage collection that
/// follows.
/// </summary>
public static class Pruner
{
    /// <summary>
    /// The ids of the versions the policy drops, from one snapshot of the catalog. Stays right while a writer adds
    /// versions: a newer version only pushes an old one further out of <see cref="PrunePolicy.KeepLast"/>, and time
    /// only moves the <see cref="PrunePolicy.KeepWithinNs"/> cutoff forward.
    /// </summary>
    public static List<long> Select(TraceReader reader, PrunePolicy policy, DateTimeOffset now)
    {
        if (policy.KeepLast is < 1)
        {
            throw new DiffKeeperException(ExitCode.Usage, "--keep-last must be at least 1: the newest version of a path is always kept");
        }

        PathHistories histories;
        using (reader.Snapshot())
        {
            histories = PathHistories.Load(reader);
        }

        if (policy.DropOldestBytes is { } bytes)
        {
            return Oldest(reader, histories, bytes);
        }

        var cutoffWallNs = policy.KeepWithinNs is { } within ? (now.ToUnixTimeMilliseconds() * 1_000_000) - within : (long?)null;
        var selected = new List<long>();
        foreach (var (key, versions) in histories.ByPath)
        {
            if (policy.Path is { } glob && !glob.IsMatch(PathHistories.Display(key)) && !glob.IsMatch(versions[^1].Rel))
            {
                continue;
            }

            for (var i = 0; i < versions.Count - 1; i++)
            {
                var v = versions[i];
                if (v.Pruned || v.Kind != EntryKind.File || (policy.SessionId is { } sid && v.SessionId != sid))
                {
                    continue;
                }

                var recent = versions.Count - i <= (policy.KeepLast ?? int.MaxValue);
                var young = cutoffWallNs is { } cutoff && histories.Sessions.TryGetValue(v.SessionId, out var s) &&
                            s.StartedWallNs + v.TimeNs >= cutoff;
                var kept = policy.KeepLast is null ? young
                    : policy.KeepWithinNs is null ? recent
                    : policy.BothLimit ? recent && young
                    : recent || young;
                if (!kept)
                {
                    selected.Add(v.Id);
                }
            }
        }

        return selected;
    }

    /// <summary>
    /// The ring's choice: file versions that are not their path's newest, oldest first by wall-clock time (session
    /// start plus time in it), until the pack records only they hold add up to <paramref name="bytes"/>. What a version
    /// frees is counted, not its size: the versions of a file written in small pieces share most chunks, and dropping
    /// half of them by size would free next to nothing. A delta's bases are counted as held by the versions that hold
    /// the delta, so a base some kept delta needs is never counted as freed.
    /// </summary>
    private static List<long> Oldest(TraceReader reader, PathHistories histories, long bytes)
    {
        var blobs = new Dictionary<long, (int Stored, long[] Bases)>();
        using (reader.Snapshot())
        {
            foreach (var b in reader.AllBlobs())
            {
                blobs[b.BlobRowId] = ((int)PackFormat.StoredBytes(b), b.Bases); // a slice frees its group's record only with its last member
            }
        }

        // Blob row -> how many unpruned file versions reach it (through their extents and delta bases).
        var holders = new Dictionary<long, int>();
        var candidates = new List<(long WallNs, long Id, List<long> Blobs)>();
        foreach (var versions in histories.ByPath.Values)
        {
            for (var i = 0; i < versions.Count; i++)
            {
                var v = versions[i];
                if (v.Pruned || v.Kind != EntryKind.File || v.Extents is null || !ExtentMap.TryDecode(v.Extents, v.Size, out var extents))
                {
                    continue;
                }

                var reached = Reach(extents.Select(e => e.BlobRowId), blobs);
                foreach (var id in reached)
                {
                    holders[id] = holders.GetValueOrDefault(id) + 1;
                }

                if (i < versions.Count - 1 && histories.Sessions.TryGetValue(v.SessionId, out var s))
                {
                    candidates.Add((s.StartedWallNs + v.TimeNs, v.Id, reached));
                }
            }
        }

        candidates.Sort((a, b) => a.WallNs != b.WallNs ? a.WallNs.CompareTo(b.WallNs) : a.Id.CompareTo(b.Id));
        var selected = new List<long>();
        var freed = 0L;
        foreach (var c in candidates)
        {
            if (freed >= bytes)
            {
                break;
            }

            selected.Add(c.Id);
            foreach (var id in c.Blobs)
            {
                if (--holders[id] == 0 && blobs.TryGetValue(id, out var blob))
                {
                    freed += blob.Stored;
                }
            }
        }

        return selected;
    }

    /// <summary>The blob rows these extents' blobs reach, themselves and their delta bases, each once.</summary>
    private static List<long> Reach(IEnumerable<long> roots, Dictionary<long, (int Stored, long[] Bases)> blobs)
    {
        var seen = new HashSet<long>();
        var stack = new Stack<long>(roots);
        while (stack.TryPop(out var id))
        {
            if (seen.Add(id) && blobs.TryGetValue(id, out var blob))
            {
                foreach (var b in blob.Bases)
                {
                    stack.Push(b);
                }
            }
        }

        return [.. seen];
    }

    /// <summary>
    /// Writer's thread: drops the content of these versions in one transaction and commits; with
    /// <paramref name="note"/>, writes the meta row <see cref="PrunePolicy.SizeLimitKeyPrefix"/>N = note for each
    /// session N of them in the same transaction.
    /// </summary>
    internal static void Mark(TraceWriter writer, IReadOnlyList<long> versionIds, string? note = null)
    {
        writer.Begin();
        using (var mark = writer.Database.Prepare("UPDATE versions SET pruned = 1, content = NULL, extents = NULL WHERE id = ?1"))
        using (var noteRow = writer.Database.Prepare(
                   $"INSERT OR REPLACE INTO meta(key, value) SELECT '{PrunePolicy.SizeLimitKeyPrefix}' || session_id, ?2 FROM versions WHERE id = ?1"))
        {
            foreach (var id in versionIds)
            {
                mark.Bind(1, id).Run();
                if (note is not null)
                {
                    noteRow.Bind(1, id).Bind(2, note).Run();
                }
            }
        }

        writer.Commit();
    }
}
