using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A maintenance pass beside a writer that goes on writing (keep mode's retention): the pass plans on a snapshot
/// and hands its changes to the writer's thread as steps; the writer writes between steps, here at the worst moment.
/// </summary>
public sealed class ConcurrentMaintenanceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// The writer stores <paramref name="comesBack"/>'s content again right before the step named
    /// <paramref name="step"/> runs: its blobs were garbage (pruned) or compaction candidates when the pass read the
    /// catalog, and the writer still has their rows cached. They must stay, whole, and readable.
    /// </summary>
    [Theory]
    [InlineData("sweep", 0)]
    [InlineData("compact", 1)]
    [InlineData("roll", 0)]
    [InlineData("end", 0)]
    public async Task Content_written_again_between_plan_and_step_stays_whole_and_readable(string step, int comesBack)
    {
        var trace = _dir.Sub("t");
        var versions = MaintenanceTests.TenPercentEdits(600_000, 4, 7);

        using var writer = TraceWriter.Open(trace);
        foreach (var v in versions)
        {
            TraceStoreTests.WriteSession(writer, _dir.Path, ("f", v));
        }

        var policy = new PrunePolicy(step == "compact" ? 3 : 1, null);
        using var steps = new QueuedWriterSteps(writer);
        using var maintainer = new Maintainer(writer, steps);
        var pass = Task.Factory.StartNew(() => maintainer.Run(new MaintenanceOptions(Prune: policy) { RowsPerStep = 2 }, DateTimeOffset.UtcNow),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var wroteAgain = false;
        var ran = new List<string>();
        while (!pass.IsCompleted)
        {
            await Task.WhenAny(steps.Queued, pass);
            if (steps.Waiting is not { } next)
            {
                continue;
            }

            if (next == step && !wroteAgain)
            {
                TraceStoreTests.WriteSession(writer, _dir.Path, ("f", versions[comesBack]));
                wroteAgain = true;
            }

            ran.Add(next);
            steps.RunPending(TimeSpan.Zero);
        }

        var result = await pass;
        Assert.True(wroteAgain, $"no '{step}' step ran: {string.Join(", ", ran.Distinct())}");
        Assert.True(result.VersionsPruned > 0);
        Assert.True(step != "compact" || result.Compaction!.Encoded > 0, "nothing was compacted");

        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        var all = r.AllVersions();
        var newest = all[^1];
        Assert.Equal(versions[comesBack], TraceStoreTests.ReadBack(r, newest));
        Assert.True(ExtentMap.TryDecode(newest.Extents, newest.Size, out var extents));
        Assert.All(extents, e => Assert.False(r.Blob(e.BlobRowId).IsDelta, "the newest version needs a delta chain"));
        foreach (var v in all.Where(v => !v.Pruned))
        {
            var expected = v.SessionId <= versions.Count ? versions[(int)v.SessionId - 1] : versions[comesBack];
            Assert.Equal(expected, TraceStoreTests.ReadBack(r, v));
        }
    }

    /// <summary>
    /// The writer stores whole again a chunk an earlier pass made a delta (it is a path's newest content again),
    /// which moves its row, between a repack's copy and the step that moves the copied rows: the row stays where
    /// the writer put it.
    /// </summary>
    [Fact]
    public async Task A_row_the_writer_moves_during_a_repack_stays_where_the_writer_put_it()
    {
        var trace = _dir.Sub("t");
        var versions = MaintenanceTests.TenPercentEdits(600_000, 4, 8);
        using (var first = TraceWriter.Open(trace))
        {
            foreach (var v in versions)
            {
                TraceStoreTests.WriteSession(first, _dir.Path, ("f", v));
            }
        }

        Assert.True(StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow).Compaction!.Encoded > 0);

        using var writer = TraceWriter.Open(trace);
        using var steps = new QueuedWriterSteps(writer);
        using var maintainer = new Maintainer(writer, steps);
        var options = new MaintenanceOptions(null, 10, 1.0, new PrunePolicy(3, null)) { RowsPerStep = 1 };
        var pass = Task.Factory.StartNew(() => maintainer.Run(options, DateTimeOffset.UtcNow),
            CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        var wroteAgain = false;
        while (!pass.IsCompleted)
        {
            await Task.WhenAny(steps.Queued, pass);
            if (steps.Waiting == "repack" && !wroteAgain)
            {
                TraceStoreTests.WriteSession(writer, _dir.Path, ("f", versions[1]));
                wroteAgain = true;
            }

            steps.RunPending(TimeSpan.Zero);
        }

        var result = await pass;
        Assert.True(wroteAgain);
        Assert.True(result.Collection.PacksRepacked > 0);
        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        var all = r.AllVersions();
        Assert.Equal(versions[1], TraceStoreTests.ReadBack(r, all[^1]));
        foreach (var v in all.SkipLast(1).Where(v => !v.Pruned))
        {
            Assert.Equal(versions[(int)v.SessionId - 1], TraceStoreTests.ReadBack(r, v));
        }
    }

    [Fact]
    public async Task A_closed_queue_stops_the_pass_and_leaves_a_store_that_verifies()
    {
        var trace = _dir.Sub("t");
        using (var writer = TraceWriter.Open(trace))
        {
            foreach (var i in Enumerable.Range(0, 6))
            {
                TraceStoreTests.WriteSession(writer, _dir.Path, ("f", CodecTests.RandomBytes(100_000, i)));
            }

            using var steps = new QueuedWriterSteps(writer);
            using var maintainer = new Maintainer(writer, steps);
            var pass = Task.Factory.StartNew(() => maintainer.Run(new MaintenanceOptions(Prune: new PrunePolicy(1, null)) { RowsPerStep = 1 }, DateTimeOffset.UtcNow),
                CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            for (var n = 0; n < 4; n++)
            {
                await steps.Queued.WaitAsync(TestContext.Current.CancellationToken);
                steps.RunPending(TimeSpan.Zero);
            }

            steps.Close();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pass);
            Assert.False(writer.HasPending);
        }

        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        Assert.Equal(CodecTests.RandomBytes(100_000, 5), TraceStoreTests.ReadBack(r, r.AllVersions()[^1]));
    }
}
