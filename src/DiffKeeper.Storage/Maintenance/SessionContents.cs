using System.Globalization;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Drops the file contents of one whole session (<c>record --keep on-failure</c> after a command that succeeded),
/// with the mechanism <c>prune</c> uses (docs/store-format.md, "Compaction, prune and garbage collection"): every
/// file version of the session is marked pruned, in one transaction with the meta row that says why, then the
/// blobs no unpruned version reaches are swept and mostly-dead packs repacked. Unlike <see cref="Pruner"/>, a
/// path's newest version goes too: the point is to keep nothing of a run that passed. The session row, its events
/// and every version's metadata (kind, mode, size, mtime) stay.
/// </summary>
public static class SessionContents
{
    /// <summary>Meta key prefix; the key is this followed by the session id, the value the reason.</summary>
    public const string NotKeptKeyPrefix = "contents_not_kept.";

    /// <summary>The reason stored for a session dropped because its command succeeded.</summary>
    public const string CommandSucceeded = "the command succeeded (record --keep on-failure)";

    /// <summary>
    /// Takes the writer's lock (the recording that wrote the session has released it). Safe to kill at any
    /// moment: before the mark commits nothing changed; after it, the sweep and repack are those of <c>gc</c>.
    /// </summary>
    public static MaintenanceResult Drop(string traceDir, long sessionId, string reason, DateTimeOffset now)
    {
        TraceReader.CheckExists(Path.GetFullPath(traceDir));
        long marked;
        using (var writer = TraceWriter.Open(traceDir))
        {
            writer.Begin();
            using (var note = writer.Database.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)"))
            {
                note.Bind(1, NotKeptKeyPrefix + sessionId.ToString(CultureInfo.InvariantCulture)).Bind(2, reason).Run();
            }

            using (var forget = writer.Database.Prepare("DELETE FROM meta WHERE key = ?1"))
            {
                forget.Bind(1, TraceWriter.MaintainedThroughKey).Run(); // blobs to sweep until the pass below finishes
            }

            using (var mark = writer.Database.Prepare(
                       "UPDATE versions SET pruned = 1, content = NULL, extents = NULL WHERE session_id = ?1 AND kind = 1 AND pruned = 0"))
            {
                mark.Bind(1, sessionId).Run();
            }

            marked = writer.Database.Changes;
            writer.Commit();
        }

        // No compaction: only what the dropped versions alone held is freed, and nothing else is re-encoded.
        var result = StoreMaintenance.Run(traceDir, new MaintenanceOptions(Delta: null), now);
        return result with { VersionsPruned = marked };
    }
}
