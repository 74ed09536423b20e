using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// What a maintenance pass does. <see cref="Delta"/> null: no compaction. <see cref="SnapshotInterval"/>, when
/// set, also bounds delta chains to N-1 deltas; <see cref="RebuildBound"/> bounds what rebuilding any blob decodes
/// (<see cref="RebuildCost"/>). <see cref="RowsPerStep"/> bounds each catalog transaction (keep mode makes it
/// small: the agent's next cut waits for the step it is running).
/// </summary>
public sealed record MaintenanceOptions(BlobCodec? Delta = BlobCodec.ZstdDelta, int? SnapshotInterval = null, double RepackThreshold = 0.9, PrunePolicy? Prune = null)
{
    public int RowsPerStep { get; init; } = 100_000;

    public double RebuildBound { get; init; } = RebuildCost.DefaultBound;

    /// <summary>Live bytes the repack may copy, beyond the packs under <see cref="RepackThreshold"/>, to leave at most
    /// 1 % of the packs dead (<see cref="RepackRule"/>); 0 for the passes while a command runs.</summary>
    public long RepackBudget { get; init; } = RepackRule.DefaultBudget;
}

public sealed record MaintenanceResult(long VersionsPruned, long BlobsSwept, CompactionResult? Compaction, CollectionResult Collection, long PackBytesBefore, long PackBytesAfter)
{
    /// <summary>What grouping small blobs did; null for a pass without compaction.</summary>
    public GroupingResult? Grouping { get; init; }
}

/// <summary>
/// Offline maintenance (<c>gc</c>, <c>prune</c>): prune, sweep, compact, repack, in that order, each step committed
/// before the next starts (so a kill -9 anywhere leaves a store that opens and verifies), then deletes the pack files
/// the catalog no longer lists. Takes the writer's lock for the whole run: a recording into the same trace waits
/// for it or fails with exit 4 (keep mode runs the same passes beside its own writer: <see cref="Maintainer"/>).
/// </summary>
public static class StoreMaintenance
{
    public static MaintenanceResult Run(string traceDir, MaintenanceOptions options, DateTimeOffset now, IProgress<string>? progress = null)
    {
        // The writer would create a missing trace: gc or prune of a mistyped --trace must say so, not succeed.
        TraceReader.CheckExists(Path.GetFullPath(traceDir));
        using var writer = TraceWriter.Open(traceDir);
        return Run(writer, options, now, progress);
    }

    /// <summary>
    /// <c>record --max-trace-size</c>, before its session adds anything: when earlier sessions already take the trace
    /// past the ring's start, drops their oldest contents first (sweep and repack, no compaction), so the new session
    /// starts with room. Returns null when there was room.
    /// </summary>
    public static MaintenanceResult? MakeRoom(TraceWriter writer, TraceSizeLimit limit, DateTimeOffset now)
    {
        if (limit.RingPolicy(TraceSizeLimit.Measure(writer.TraceDir)) is not { } ring)
        {
            return null;
        }

        using var maintainer = new Maintainer(writer, new InlineWriterSteps(writer));
        return maintainer.Run(new MaintenanceOptions(Delta: null, Prune: ring), now);
    }

    /// <summary>
    /// The same with a writer the caller holds, nothing pending in it, and closes next (<c>record</c> compacts its
    /// trace this way after its session finished). The steps commit at <c>synchronous=NORMAL</c>: each step's records
    /// are fsynced before the commit that references them, and a step lost to a power cut leaves its rows naming the
    /// records they named before, which are still there, because no pack file is deleted before the catalog is
    /// synced: the files the pass drops are deleted as the writer closes, after its checkpoint synced the catalog
    /// (<see cref="TraceWriter.DeletesPackFilesAtClose"/>). Each WAL fsync cost a W1 pass ~1–3 ms of wall time, six of them a pass.
    /// </summary>
    public static MaintenanceResult Run(TraceWriter writer, MaintenanceOptions options, DateTimeOffset now, IProgress<string>? progress = null)
    {
        // The caller closes the writer next: the files go after the close's sync, not after one of their own.
        writer.DeletesPackFilesAtClose = true;
        MaintenanceResult result;
        using (var maintainer = new Maintainer(writer, new InlineWriterSteps(writer)))
        {
            result = maintainer.Run(options, now, progress);
        }

        // Also the files earlier runs had to leave behind for a reader.
        var known = writer.Database.Prepare("SELECT id FROM packs");
        var ids = new HashSet<long>();
        while (known.Step())
        {
            ids.Add(known.Int64(0));
        }

        known.Dispose();
        var left = writer.DeleteUnreferencedPacks(ids);
        return result with { Collection = result.Collection with { PackFilesLeft = left.Count } };
    }
}
