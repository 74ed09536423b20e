using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Where maintenance puts what it writes (<see cref="MaintenancePack"/>): deltas in a pack of their own, continued by
/// later passes, whole records apart, so a repack never copies a delta again for a whole record that died beside it.
/// </summary>
public sealed class MaintenancePackTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>
    /// W1 of the anchor benchmarks as <c>record</c> makes it: one writer a version (one process each), the pass after
    /// the session with it. Each pass turns the last version's chunks into deltas and frees their whole records; with
    /// both in one pack, the repack copied every delta before them again (W1's 11th version: 1.1 MB copied for 100 KB
    /// of new deltas).
    /// </summary>
    [Fact]
    public void A_delta_is_written_once_and_the_packs_stay_few_across_one_pass_a_session()
    {
        var versions = MaintenanceTests.TenPercentEdits(1 << 20, 12, seed: 5);
        var trace = _dir.Sub("t");
        var placed = new Dictionary<long, (long Pack, long Offset)>();
        foreach (var v in versions)
        {
            using (var w = TraceWriter.Open(trace))
            {
                TraceStoreTests.WriteSession(w, _dir.Path, ("f", v));
                StoreMaintenance.Run(w, new MaintenanceOptions(), DateTimeOffset.UtcNow);
            }

            using var r = TraceReader.Open(trace);
            foreach (var b in r.AllBlobs().Where(b => b.Codec == BlobCodec.ZstdDelta))
            {
                if (placed.TryGetValue(b.BlobRowId, out var at))
                {
                    Assert.Equal(at, (b.PackId, b.Offset));
                }
                else
                {
                    placed[b.BlobRowId] = (b.PackId, b.Offset);
                }
            }

            // The writer's pack, the whole records still live from earlier ones, the deltas.
            Assert.True(r.PacksCommitted().Count <= 3, $"packs: {string.Join(", ", r.PacksCommitted())}");
        }

        Assert.True(placed.Count >= 50, $"{placed.Count} deltas: the case must make deltas");
        Assert.Single(placed.Values.Select(p => p.Pack).Distinct());
        using var reader = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(reader, readData: true).Ok);
        var read = reader.AllVersions().OrderBy(v => v.Id).Select(v => TraceStoreTests.ReadBack(reader, v)).ToList();
        Assert.Equal(versions, read);
        var live = reader.AllBlobs().Where(b => b.HasRecord).Sum(b => (long)PackFormat.RecordSize(b.StoredLength));
        var total = reader.PacksCommitted().Sum(p => p.CommittedSize - PackFormat.HeaderSize);
        Assert.True(total - live <= total / 100, $"dead {total - live} of {total}");
    }

    /// <summary>
    /// The packs a repack takes are copied in shared steps, one fsync and one commit for all of them: the pass after a
    /// W1 session takes the last session's pack and the earlier passes' packs of whole records, and gave each its own.
    /// </summary>
    [Fact]
    public void The_packs_one_repack_takes_are_copied_in_one_step()
    {
        var versions = MaintenanceTests.TenPercentEdits(1 << 20, 5, seed: 9);
        var trace = _dir.Sub("t");
        for (var i = 0; i < versions.Count; i++)
        {
            using var w = TraceWriter.Open(trace);
            TraceStoreTests.WriteSession(w, _dir.Path, ("f", versions[i]));
            if (i < versions.Count - 1)
            {
                StoreMaintenance.Run(w, new MaintenanceOptions(), DateTimeOffset.UtcNow);
                continue;
            }

            var steps = new CountedSteps(new InlineWriterSteps(w));
            MaintenanceResult done;
            using (var maintainer = new Maintainer(w, steps))
            {
                done = maintainer.Run(new MaintenanceOptions(), DateTimeOffset.UtcNow);
            }

            Assert.True(done.Collection.PacksRepacked + done.Collection.PacksDropped >= 2, $"{done.Collection}: the case needs two packs taken");
            Assert.Equal(1, steps.Count("repack"));
        }

        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        Assert.Equal(versions, r.AllVersions().OrderBy(v => v.Id).Select(v => TraceStoreTests.ReadBack(r, v)));
    }

    /// <summary>
    /// The pass after a session (and <c>gc</c>) leaves the pack files it dropped to the writer's close, which deletes
    /// them once its checkpoint has synced the catalog, instead of syncing the catalog once more for them; a reader
    /// holding the trace at the close keeps them, and the next writer deletes them as it opens.
    /// </summary>
    [Fact]
    public void The_pack_files_a_pass_drops_go_as_the_writer_closes()
    {
        var versions = MaintenanceTests.TenPercentEdits(1 << 20, 4, seed: 11);
        var trace = _dir.Sub("t");
        for (var i = 0; i < 2; i++)
        {
            using var w = TraceWriter.Open(trace);
            TraceStoreTests.WriteSession(w, _dir.Path, ("f", versions[i]));
        }

        for (var i = 2; i < 4; i++)
        {
            var before = PackFiles(trace);
            var readerAtClose = i == 3;
            TraceReader? reader = null;
            using (var w = TraceWriter.Open(trace))
            {
                TraceStoreTests.WriteSession(w, _dir.Path, ("f", versions[i]));
                var done = StoreMaintenance.Run(w, new MaintenanceOptions(), DateTimeOffset.UtcNow);
                Assert.True(done.Collection.PacksRepacked + done.Collection.PacksDropped >= 1, $"{done.Collection}: the case needs a pack dropped");
                Assert.Equal(0, done.Collection.PackFilesLeft);
                Assert.Subset(PackFiles(trace), before); // still there while the writer is open
                reader = readerAtClose ? TraceReader.Open(trace) : null;
            }

            using (reader)
            {
                // Without a reader, exactly the packs the catalog lists; with one, the dropped files too.
                Assert.Equal(readerAtClose, PackFiles(trace).IsProperSupersetOf(Listed(trace)));
                Assert.True(PackFiles(trace).IsSupersetOf(Listed(trace)));
            }
        }

        using (TraceWriter.Open(trace))
        {
        }

        Assert.Equal(Listed(trace), PackFiles(trace));
        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        Assert.Equal(versions, r.AllVersions().OrderBy(v => v.Id).Select(v => TraceStoreTests.ReadBack(r, v)));
    }

    private static HashSet<string> PackFiles(string trace) =>
        [.. Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories)];

    private static HashSet<string> Listed(string trace)
    {
        using var r = TraceReader.Open(trace);
        return [.. r.PacksCommitted().Select(p => Path.Combine(trace, PackFormat.RelativePath(p.Id)))];
    }

    /// <summary>Runs each step through another <see cref="IWriterSteps"/> and counts them by name.</summary>
    private sealed class CountedSteps(IWriterSteps inner) : IWriterSteps
    {
        private readonly Dictionary<string, int> _counts = [];

        public CancellationToken Stopping => inner.Stopping;

        public int Count(string name) => _counts.GetValueOrDefault(name);

        public T Run<T>(string name, Func<TraceWriter, T> step)
        {
            _counts[name] = Count(name) + 1;
            return inner.Run(name, step);
        }
    }
}
