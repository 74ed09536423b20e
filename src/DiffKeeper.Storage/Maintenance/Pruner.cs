using DiffKeeper.Core;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>Which versions <see cref="Pruner"/> keeps. At least one of <see cref="KeepLast"/> and <see cref="KeepWithinNs"/> is set.</summary>
public sealed record PrunePolicy(int? KeepLast, long? KeepWithinNs, Glob? Path = null, long? SessionId = null);

/// <summary>
/// Marks file versions pruned (docs/store-format.md, "Compaction, prune and garbage collection"): per logical
/// path, versions outside the policy lose their content in one transaction. The newest version of a path is never
/// pruned, whatever the policy says, so the latest state always restores. The bytes are freed by the garbage
/// collection that follows.
/// </summary>
public static class Pruner
{
    /// <summary>Marks what the policy drops and commits; returns how many versions it pruned.</summary>
    public static long Prune(TraceWriter writer, TraceReader reader, PrunePolicy policy, DateTimeOffset now)
    {
        if (policy.KeepLast is < 1)
        {
            throw new DiffKeeperException(ExitCode.Usage, "--keep-last must be at least 1: the newest version of a path is always kept");
        }

        var histories = PathHistories.Load(reader);
        var cutoffWallNs = policy.KeepWithinNs is { } within ? (now.ToUnixTimeMilliseconds() * 1_000_000) - within : (long?)null;
        long pruned = 0;
        writer.Begin();
        using var mark = writer.Database.Prepare("UPDATE versions SET pruned = 1, content = NULL, extents = NULL WHERE id = ?1");
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
                var kept = policy.KeepLast is null ? young : policy.KeepWithinNs is null ? recent : recent || young;
                if (!kept)
                {
                    mark.Bind(1, v.Id).Run();
                    pruned++;
                }
            }
        }

        writer.Commit();
        return pruned;
    }
}
