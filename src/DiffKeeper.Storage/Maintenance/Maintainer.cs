namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Runs maintenance passes over a trace: prune, sweep, compact, repack, then delete the pack files the catalog
/// stopped naming. A pass runs on a maintenance thread that reads through its own <see cref="TraceReader"/> and
/// changes the catalog only through <see cref="IWriterSteps"/>, in steps of at most
/// <see cref="MaintenanceOptions.RowsPerStep"/> rows, each committed (docs/store-format.md, "Compaction, prune and
/// garbage collection"): offline (<c>gc</c>, <c>prune</c>) the steps run inline; in keep mode the agent runs them
/// between its cuts while it goes on recording. Across passes it keeps its output pack, the rows compaction already
/// considered, and the pack files a reader kept it from deleting.
/// The maintenance thread calls only the writer's thread-safe members (<see cref="TraceWriter.CreatePack"/>,
/// <see cref="TraceWriter.SyncToDisk"/>, <see cref="TraceWriter.DeletePackFiles"/>).
/// </summary>
public sealed class Maintainer : IDisposable
{
    private readonly TraceWriter _writer;
    private readonly IWriterSteps _steps;
    private readonly MaintenancePack _output;
    private readonly HashSet<long> _examined = [];
    private readonly HashSet<long> _filesLeft = [];

    public Maintainer(TraceWriter writer, IWriterSteps steps)
    {
        _writer = writer;
        _steps = steps;
        _output = new MaintenancePack(writer);
    }

    /// <summary>Pack files dropped from the catalog that a reader kept this from deleting (retried every pass).</summary>
    public int PackFilesLeft => _filesLeft.Count;

    public MaintenanceResult Run(MaintenanceOptions options, DateTimeOffset now, IProgress<string>? progress = null)
    {
        // Before anything is read: every version the writer adds from now on is tracked, so a plan made on what
        // this pass reads never sweeps or re-encodes a blob such a version names.
        // The mark of the last finished pass goes first: a pass killed half-way leaves none, and the next `record`
        // then runs a whole pass instead of skipping it (TraceWriter.HasMaintenanceWork).
        var (writerPack, firstNew, through) = _steps.Run("begin", w =>
        {
            w.TrackReferences();
            w.SetMaintainedThrough(null);
            return (w.CurrentPackId, w.NextPackId, w.LastVersionId);
        });
        try
        {
            var result = RunPass(options, now, progress, writerPack, firstNew);
            if (_filesLeft.Count == 0 && options.Delta is not null) // a pass without compaction covers less
            {
                _steps.Run("maintained", w =>
                {
                    w.SetMaintainedThrough(through);
                    return 0;
                });
            }

            return result;
        }
        finally
        {
            try
            {
                _steps.Run("end", w =>
                {
                    w.StopTrackingReferences();
                    return 0;
                });
            }
            catch (OperationCanceledException)
            {
                // the owner stopped: nothing tracks any more
            }
        }
    }

    private MaintenanceResult RunPass(MaintenanceOptions options, DateTimeOffset now, IProgress<string>? progress, long writerPack, long firstNew)
    {
        long before, after, pruned = 0, swept;
        CompactionResult? compaction = null;
        GroupingResult? grouping = null;
        (int Repacked, int Dropped, long Copied, List<long> DroppedIds) repack;
        using (var reader = TraceReader.Open(_writer.TraceDir))
        {
            before = PackBytes(reader);
            if (options.Prune is { } policy)
            {
                progress?.Report("pruning");
                var ids = Pruner.Select(reader, policy, now);
                foreach (var batch in ids.Chunk(options.RowsPerStep))
                {
                    _steps.Run("prune", w =>
                    {
                        Pruner.Mark(w, batch, policy.Note);
                        return 0;
                    });
                }

                pruned = ids.Count;
            }

            // Deltas go on in the pack an earlier pass (of this process or another) put its deltas in.
            _output.ContinueDeltasIn(reader.NewestDeltaPack(firstNew, writerPack));
            progress?.Report("sweeping unreferenced blobs");
            swept = GarbageCollector.Sweep(reader, _steps, options.RowsPerStep);
            if (options.Delta is { } codec)
            {
                progress?.Report("compacting (re-encoding older versions as deltas)");
                PathHistories histories;
                using (reader.Snapshot())
                {
                    histories = PathHistories.Load(reader);
                }

                compaction = Compactor.Run(reader, histories, _steps, _output, codec, options.SnapshotInterval, options.RebuildBound, options.RowsPerStep, _examined, progress);

                // After compaction: what stayed whole is what groups well, and a group whose superseded members
                // compaction re-encoded is regrouped; its old row goes in grouping's last step, so this pass's
                // repack frees its record.
                progress?.Report("grouping small blobs");
                grouping = Grouper.Run(reader, histories, _steps, _output, options.RepackThreshold, progress);
            }

            progress?.Report("repacking");
            repack = GarbageCollector.Repack(reader, _steps, _output, options.RepackThreshold, options.RepackBudget, writerPack, firstNew, options.RowsPerStep);
            after = PackBytes(reader);
        }

        // The reader above held LOCK.readers shared; released now, so the deletion can take it exclusively (it syncs the
        // catalog first); what it cannot delete the next pass tries again.
        _filesLeft.UnionWith(repack.DroppedIds);
        if (_filesLeft.Count > 0)
        {
            var left = _writer.DeletePackFiles(_filesLeft);
            _filesLeft.Clear();
            _filesLeft.UnionWith(left);
        }

        return new MaintenanceResult(pruned, swept, compaction,
            new CollectionResult(swept, repack.Repacked, repack.Dropped, repack.Copied, _filesLeft.Count), before, after) { Grouping = grouping };
    }

    private static long PackBytes(TraceReader reader) => reader.PacksCommitted().Sum(p => p.CommittedSize);

    public void Dispose() => _output.Dispose();
}
