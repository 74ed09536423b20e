using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What <see cref="StoreMaintenance.Run"/> does. <see cref="Delta"/> null: no compaction.</summary>
public sealed record MaintenanceOptions(BlobCodec? Delta = BlobCodec.ZstdDelta, int SnapshotInterval = 10, double RepackThreshold = 0.9, PrunePolicy? Prune = null);

public sealed record MaintenanceResult(long VersionsPruned, long BlobsSwept, CompactionResult? Compaction, CollectionResult Collection, long PackBytesBefore, long PackBytesAfter);

/// <summary>
/// Prune, sweep, compact, repack, in that order, each step committed before the next starts (so a kill -9
/// anywhere leaves a store that opens and verifies), then deletes the pack files the catalog no longer lists.
/// Takes the writer's lock for the whole run: a recording into the same trace waits for it or fails with exit 4.
/// </summary>
public static class StoreMaintenance
{
    public static MaintenanceResult Run(string traceDir, MaintenanceOptions options, DateTimeOffset now, IProgress<string>? progress = null)
    {
        using var writer = TraceWriter.Open(traceDir);
        writer.Database.Execute("PRAGMA synchronous=FULL"); // old packs are deleted right after these commits
        long before, after;
        long pruned = 0, swept;
        CompactionResult? compaction = null;
        (int Repacked, int Dropped, long Copied) repack;
        using (var reader = TraceReader.Open(traceDir))
        {
            before = PackBytes(reader);
            if (options.Prune is { } policy)
            {
                progress?.Report("pruning");
                pruned = Pruner.Prune(writer, reader, policy, now);
            }

            progress?.Report("sweeping unreferenced blobs");
            swept = GarbageCollector.Sweep(writer, reader);
            if (options.Delta is { } codec)
            {
                progress?.Report("compacting (re-encoding older versions as deltas)");
                compaction = Compactor.Run(writer, reader, codec, options.SnapshotInterval, progress);
            }

            progress?.Report("repacking");
            repack = GarbageCollector.Repack(writer, reader, options.RepackThreshold);
            after = PackBytes(reader);
        }

        // The reader above held LOCK.readers shared; released now, so the deletion can take it exclusively.
        var known = writer.Database.Prepare("SELECT id FROM packs");
        var ids = new HashSet<long>();
        while (known.Step())
        {
            ids.Add(known.Int64(0));
        }

        known.Dispose();
        var left = writer.DeleteUnreferencedPacks(ids);
        return new MaintenanceResult(pruned, swept, compaction,
            new CollectionResult(swept, repack.Repacked, repack.Dropped, repack.Copied, left.Count), before, after);
    }

    private static long PackBytes(TraceReader reader) => reader.PacksCommitted().Sum(p => p.CommittedSize);
}
