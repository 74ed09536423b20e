using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What mark-and-sweep and repacking did.</summary>
public sealed record CollectionResult(long BlobsSwept, int PacksRepacked, int PacksDropped, long RecordsCopied, int PackFilesLeft);

/// <summary>
/// Mark and sweep, then repack (docs/store-format.md, "Compaction, prune and garbage collection"). Live blobs
/// are those an unpruned version's extent map names, plus their delta bases, transitively; other rows are
/// deleted. A pack whose live records fill less than the threshold of it is copied record by record into the
/// maintenance pack (fsynced before the step that moves the rows and drops the old pack's row). Both plan on a
/// snapshot read on the maintenance thread and change the catalog in bounded steps on the writer's thread; a
/// writer that goes on recording meanwhile is safe: a row a version added since then names is not swept, and a
/// row moves only from where the plan saw it (compare and set). A kill -9 between any two steps leaves the old
/// rows on the old records or the new rows on fsynced new records.
/// </summary>
internal static class GarbageCollector
{
    private const long BytesPerStep = 64L << 20;

    // Each pack a step drops costs it a scan of the blob rows (no index on pack_id): keep mode runs steps on the agent's thread.
    private const int PacksPerStep = 16;

    /// <summary>Deletes the rows of blobs nothing live needs, <paramref name="rowsPerStep"/> per step; returns how many.</summary>
    public static long Sweep(TraceReader reader, IWriterSteps steps, int rowsPerStep)
    {
        var bases = new Dictionary<long, long[]>();
        var all = new List<(long Row, BlobId Id)>();
        var live = new HashSet<long>();
        var stack = new Stack<long>();
        using (reader.Snapshot())
        {
            foreach (var loc in reader.AllBlobs())
            {
                all.Add((loc.BlobRowId, loc.Id));
                if (loc.HasBases) // a slice reaches its group as a delta reaches its bases
                {
                    bases[loc.BlobRowId] = loc.Bases;
                }
            }

            foreach (var v in reader.AllVersions())
            {
                if (!v.Pruned && v.Extents is not null && ExtentMap.TryDecode(v.Extents, v.Size, out var extents))
                {
                    foreach (var e in extents)
                    {
                        stack.Push(e.BlobRowId);
                    }

                    Reach(stack, bases, live);
                }
                else if (!v.Pruned && v.Extents is not null)
                {
                    return 0; // a malformed map might name anything: sweeping could destroy what verify should report
                }
            }
        }

        var garbage = all.Where(b => !live.Contains(b.Row)).ToList();
        long swept = 0;
        // Versions the writer added since the snapshot may name a row the snapshot saw unreferenced (the same chunk
        // written again): those rows, and what they decode through, stay. The set only grows during a pass, so each
        // step reaches from it again only when it grew.
        var kept = new HashSet<long>();
        var reachedFrom = 0;
        foreach (var batch in garbage.Chunk(rowsPerStep))
        {
            swept += steps.Run("sweep", writer =>
            {
                var referenced = writer.ReferencedSinceTracking;
                if (referenced.Count != reachedFrom)
                {
                    foreach (var row in referenced)
                    {
                        stack.Push(row);
                    }

                    Reach(stack, bases, kept);
                    reachedFrom = referenced.Count;
                }

                writer.Begin();
                var deleted = new List<BlobId>();
                using (var delete = writer.Database.Prepare("DELETE FROM blobs WHERE id = ?1"))
                {
                    foreach (var (row, id) in batch)
                    {
                        if (!kept.Contains(row))
                        {
                            delete.Bind(1, row).Run();
                            deleted.Add(id);
                        }
                    }
                }

                writer.Commit();
                writer.ForgetBlobs(deleted);
                return deleted.Count;
            });
        }

        return swept;
    }

    // Pops the stack empty: every row on it and every row those decode through are added to reached. One stack for
    // a whole sweep (a stack made from each version's rows was 5 % of a pass over an untar's catalog).
    private static void Reach(Stack<long> stack, Dictionary<long, long[]> bases, HashSet<long> reached)
    {
        while (stack.TryPop(out var row))
        {
            if (reached.Add(row) && bases.TryGetValue(row, out var b))
            {
                foreach (var x in b)
                {
                    stack.Push(x);
                }
            }
        }
    }

    /// <summary>
    /// Repacks the packs <see cref="RepackRule"/> takes (live fraction below <paramref name="threshold"/>, then the
    /// most dead within <paramref name="budget"/>) and drops empty ones. Packs created
    /// since the pass began (id at least <paramref name="firstNew"/>) are left alone. The pack the writer appended to
    /// when the pass began (<paramref name="writerPack"/>) and maintenance's own packs are rolled first when
    /// they qualify (so the writer's garbage is freed without waiting for its pack to fill), and their rows are
    /// read again once nothing can be added to them. Returns the ids of the packs whose rows it dropped.
    /// </summary>
    public static (int Repacked, int Dropped, long Copied, List<long> DroppedIds) Repack(
        TraceReader reader, IWriterSteps steps, MaintenancePack output, double threshold, long budget, long writerPack, long firstNew, int rowsPerStep)
    {
        Dictionary<long, List<BlobLocation>> byPack;
        IReadOnlyList<(long Id, long CommittedSize)> packs;
        using (reader.Snapshot())
        {
            byPack = reader.AllBlobs().Where(b => b.HasRecord).GroupBy(b => b.PackId).ToDictionary(g => g.Key, g => g.ToList());
            packs = reader.PacksCommitted();
        }

        int repacked = 0, dropped = 0;
        long copied = 0;
        var droppedIds = new List<long>();
        var buffer = new byte[PackFormat.RecordSize(Codecs.Zstd.CompressBound(PackFormat.MaxGroupLength))];
        var live = byPack.ToDictionary(p => p.Key, p => p.Value.Sum(r => (long)PackFormat.RecordSize(r.StoredLength)));
        var taken = RepackRule.Taken(packs, live, threshold, budget, id => id < firstNew);
        // The taken packs' live records, in pack order, then copied in shared steps: one fsync and one commit for
        // as many packs as a step holds (a pass after a W1 session took three small packs, each with its own).
        var sources = new List<(long PackId, List<BlobLocation> Records)>();
        foreach (var (packId, _) in packs)
        {
            if (!taken.Contains(packId))
            {
                continue;
            }

            var records = byPack.GetValueOrDefault(packId) ?? [];

            if (packId == writerPack)
            {
                // The writer may have added rows to it since the snapshot: once it appends elsewhere, the catalog
                // lists every row the pack will ever have.
                if (!steps.Run("roll", w => w.RollPack(packId)))
                {
                    continue;
                }

                using (reader.Snapshot())
                {
                    records = reader.AllBlobs().Where(b => b.HasRecord && b.PackId == packId).ToList();
                }
            }
            else
            {
                output.Release(packId);
            }

            try
            {
                foreach (var r in records)
                {
                    reader.Packs.CheckFraming(r);
                }
            }
            catch (BlobDamagedException)
            {
                continue; // keep a damaged pack as it is: verify names what is in it
            }

            sources.Add((packId, records));
        }

        // Copied in batches of whole steps; a pack's row goes with the batch that moves its last record.
        int source = 0, at = 0;
        while (source < sources.Count)
        {
            steps.Stopping.ThrowIfCancellationRequested();
            var moves = new List<(BlobLocation From, long Pack, long Offset)>();
            var finished = new List<(long PackId, int Records)>();
            long bytes = 0;
            while (source < sources.Count && moves.Count < rowsPerStep && bytes < BytesPerStep && finished.Count < PacksPerStep)
            {
                var (packId, records) = sources[source];
                if (at < records.Count)
                {
                    var r = records[at++];
                    var record = reader.Packs.ReadRecord(r, buffer);
                    var (pack, offset) = output.AppendRecord(record, r.Offset);
                    moves.Add((r, pack, offset));
                    bytes += record.Length;
                }

                if (at == records.Count)
                {
                    finished.Add((packId, records.Count));
                    source++;
                    at = 0;
                }
            }

            var sizes = output.Sync();
            var dropping = new List<(long PackId, int Records)>();
            copied += steps.Run("repack", writer =>
            {
                dropping.Clear();
                writer.Begin();
                MaintenancePack.RecordSizes(writer, sizes);
                var moved = 0;
                using (var move = writer.Database.Prepare("UPDATE blobs SET pack_id = ?4, offset = ?5 WHERE id = ?1 AND pack_id = ?2 AND offset = ?3"))
                {
                    foreach (var (from, pack, offset) in moves)
                    {
                        // A row the writer moved meanwhile (a delta stored whole again) stays where it is now.
                        move.Bind(1, from.BlobRowId).Bind(2, from.PackId).Bind(3, from.Offset).Bind(4, pack).Bind(5, offset).Run();
                        moved += writer.Database.Changes;
                    }
                }

                // A pack goes only if no row is left in it. The plan listed every row the pack had when it was
                // made, but a writer still appending to this pack (its current one when the plan's snapshot was
                // taken) may have added rows or moved one within it since; such a pack stays, and a later pass
                // takes it once the writer has moved on. Found by the agent-kill test: a dropped pack whose rows
                // remained left versions pointing at a deleted file.
                using var left = writer.Database.Prepare("SELECT count(*) FROM blobs WHERE pack_id = ?1");
                using var drop = writer.Database.Prepare("DELETE FROM packs WHERE id = ?1");
                foreach (var done in finished)
                {
                    left.Bind(1, done.PackId);
                    if (left.ScalarInt64() == 0)
                    {
                        drop.Bind(1, done.PackId).Run();
                        dropping.Add(done);
                    }
                }

                writer.Commit();
                return moved;
            });

            foreach (var (packId, records) in dropping)
            {
                droppedIds.Add(packId);
                if (records > 0)
                {
                    repacked++;
                }
                else
                {
                    dropped++;
                }
            }
        }

        return (repacked, dropped, copied, droppedIds);
    }
}
