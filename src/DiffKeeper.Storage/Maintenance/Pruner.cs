using DiffKeeper.Core;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Which versions <see cref="Pruner"/> keeps. At least one of <see cref="KeepLast"/> and <see cref="KeepWithinNs"/>
/// is set. With both, a version either of them keeps is kept (<c>prune</c>), or, with <see cref="BothLimit"/>, only a
/// version both keep (keep mode's retention: <c>--max-versions</c> and <c>--retain</c> are two limits).
/// </summary>
public sealed record PrunePolicy(int? KeepLast, long? KeepWithinNs, Glob? Path = null, long? SessionId = null, bool BothLimit = false);

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

    /// <summary>Writer's thread: drops the content of these versions in one transaction and commits.</summary>
    internal static void Mark(TraceWriter writer, IReadOnlyList<long> versionIds)
    {
        writer.Begin();
        using (var mark = writer.Database.Prepare("UPDATE versions SET pruned = 1, content = NULL, extents = NULL WHERE id = ?1"))
        {
            foreach (var id in versionIds)
            {
                mark.Bind(1, id).Run();
            }
        }

        writer.Commit();
    }
}
