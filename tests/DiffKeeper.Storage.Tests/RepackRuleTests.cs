using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// <see cref="RepackRule"/>: packs under the threshold, then the most dead within the budget until at most 1 % of the
/// packs is dead; and what a pass leaves on a trace shaped as W1's (a few percent dead in one pack, over the threshold).
/// </summary>
public sealed class RepackRuleTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private const long H = PackFormat.HeaderSize;

    [Fact]
    public void Packs_under_the_threshold_then_the_most_dead_within_the_budget()
    {
        (long, long)[] packs = [(1, H + 1000), (2, H + 1000), (3, H + 1000), (4, H + 1000)];
        var live = new Dictionary<long, long> { [1] = 850, [2] = 950, [3] = 990, [4] = 0 };

        // 1 under 0.9, 4 empty; then 2 (5 % dead) brings the rest (3: 10 of 2,000 left) within 1 %.
        Assert.Equal([1, 2, 4], RepackRule.Taken(packs, live, 0.9, budget: 10_000).Order());
        // Without a budget, the threshold alone; 2's copy does not fit a budget of 900.
        Assert.Equal([1, 4], RepackRule.Taken(packs, live, 0.9, budget: 0).Order());
        Assert.Equal([1, 4], RepackRule.Taken(packs, live, 0.9, budget: 900).Order());
        // Threshold 0: only what holds nothing live.
        Assert.Equal([4], RepackRule.Taken(packs, live, 0, budget: 10_000).Order());
        // A pack this pass may not take is never taken, nor are others taken for its dead records.
        Assert.Equal([1, 4], RepackRule.Taken(packs, live, 0.9, budget: 10_000, id => id != 2).Order());
        // A pack whose copy the budget cannot pay keeps no other pack taken for its dead records (1 GiB, 3 % dead).
        (long, long)[] big = [(1, H + (1L << 30)), (2, H + 100_000)];
        var bigLive = new Dictionary<long, long> { [1] = (1L << 30) / 100 * 97, [2] = 99_500 };
        Assert.Empty(RepackRule.Taken(big, bigLive, 0.9, budget: 64L << 20));
        // Within 1 % already: nothing beyond the threshold.
        var tidy = new Dictionary<long, long> { [1] = 1000, [2] = 995, [3] = 1000, [4] = 1000 };
        Assert.Empty(RepackRule.Taken(packs, tidy, 0.9, budget: 10_000));
    }

    /// <summary>
    /// A few percent of a pack dead, over the 0.9 threshold (W1's trace kept 65 KB of a 911 KB pack so): one file of
    /// 1.2 MB and one of 80 KB in the first session's pack, the small one rewritten in the second session and its
    /// first version pruned. A pass without the budget (the passes while a command runs) leaves its record dead; the
    /// default pass rewrites that pack, and then nothing is left for a pass.
    /// </summary>
    [Fact]
    public void A_pass_leaves_at_most_a_percent_of_the_packs_dead()
    {
        var rng = new Random(7);
        var big = new byte[1200 << 10];
        var small = new byte[80 << 10]; // over Grouper.MaxMember: a record of its own, not a slice of a group
        var other = new byte[80 << 10];
        rng.NextBytes(big);
        rng.NextBytes(small);
        rng.NextBytes(other);

        string Trace(string name)
        {
            var trace = _dir.Sub(name);
            using var w = TraceWriter.Open(trace);
            TraceStoreTests.WriteSession(w, _dir.Path, ("a.bin", big), ("b.bin", small));
            TraceStoreTests.WriteSession(w, _dir.Path, ("a.bin", big), ("b.bin", other));
            return trace;
        }

        var prune = new MaintenanceOptions(Delta: null, Prune: new PrunePolicy(1, null));
        var kept = Trace("kept");
        var first = StoreMaintenance.Run(kept, prune with { RepackBudget = 0 }, DateTimeOffset.UtcNow);
        Assert.True(first.BlobsSwept > 0);
        Assert.Equal(0, first.Collection.PacksRepacked);
        var (dead, total) = DeadBytes(kept);
        Assert.True(dead > total / 100 && dead < total / 10, $"dead {dead} of {total}: the case needs 1-10 %");
        var pass = StoreMaintenance.Run(kept, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(1, pass.Collection.PacksRepacked);
        (dead, total) = DeadBytes(kept);
        Assert.True(dead <= total / 100, $"dead {dead} of {total}");
        Assert.True(pass.PackBytesAfter < pass.PackBytesBefore);
        using (var w = TraceWriter.Open(kept))
        {
            Assert.False(w.HasMaintenanceWork());
        }

        // The default pass with the prune does the same at once, and every version left reads back.
        var once = Trace("once");
        Assert.Equal(1, StoreMaintenance.Run(once, prune, DateTimeOffset.UtcNow).Collection.PacksRepacked);
        Assert.True(DeadBytes(once).Dead <= DeadBytes(once).Total / 100);
        using var r = TraceReader.Open(once);
        var versions = r.AllVersions().Where(v => v.Kind == Core.EntryKind.File && !v.Pruned).OrderBy(v => v.Id).ToList();
        Assert.Equal([big, other], versions.Select(v => TraceStoreTests.ReadBack(r, v)));
    }

    private static (long Dead, long Total) DeadBytes(string trace)
    {
        using var r = TraceReader.Open(trace);
        var live = r.AllBlobs().Where(b => b.HasRecord).Sum(b => (long)PackFormat.RecordSize(b.StoredLength));
        var total = r.PacksCommitted().Sum(p => p.CommittedSize - H);
        return (total - live, total);
    }
}
