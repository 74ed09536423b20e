using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Which packs a pass's repack rewrites (docs/store-format.md, "Compaction, prune and garbage collection"); the
/// repack itself and every step that counts on it (grouping's gain, <c>record</c>'s choice to run a pass) ask here.
/// A pack is taken when it holds no live record, or when its live records fill less than the threshold of it. Then,
/// while the dead records a repack could clear would be more than <see cref="DeadShare"/> of all packs, the packs
/// with the largest dead share (at least <see cref="DeadShare"/> each) are taken too, as long as the live bytes they
/// copy fit the budget: W1's trace (20 versions of 1 MiB) kept 65 KB dead in a 911 KB pack (7 %, over the
/// threshold), 2 % of the trace, for good. Dead records alone never bring a pass (<c>TraceWriter.HasMaintenanceWork</c>):
/// a pack no repack clears would bring one after every <c>record</c>.
/// </summary>
internal static class RepackRule
{
    /// <summary>The dead records a pass leaves, at most, as a share of the trace's packs (within the budget).</summary>
    public const double DeadShare = 0.01;

    /// <summary>The budget of the default passes: live bytes copied for <see cref="DeadShare"/>, beyond the threshold's packs.</summary>
    public const long DefaultBudget = 64L << 20;

    /// <param name="packs">Every pack with its committed size.</param>
    /// <param name="live">The bytes of live records (<see cref="PackFormat.RecordSize"/>) in each pack.</param>
    /// <param name="threshold">A pack under this live fraction is taken; 0 takes only packs with nothing live, and
    /// keeps the dead share unbounded.</param>
    /// <param name="budget">Live bytes that may be copied for <see cref="DeadShare"/>.</param>
    /// <param name="eligible">Packs this pass may rewrite (not those made since it began).</param>
    public static HashSet<long> Taken(IEnumerable<(long Id, long CommittedSize)> packs, IReadOnlyDictionary<long, long> live,
        double threshold, long budget, Func<long, bool>? eligible = null)
    {
        var taken = new HashSet<long>();
        var candidates = new List<(long Id, long Live, long Dead, double Share)>();
        long total = 0, dead = 0;
        foreach (var (id, committed) in packs)
        {
            var size = Math.Max(0, committed - PackFormat.HeaderSize);
            var liveBytes = Math.Min(size, live.GetValueOrDefault(id));
            var deadBytes = size - liveBytes;
            var may = eligible?.Invoke(id) ?? true;
            if (may && (liveBytes == 0 || (double)liveBytes / Math.Max(1, size) < threshold))
            {
                taken.Add(id);
                total += liveBytes;
                continue;
            }

            total += size;
            // Only dead records a repack within the budget could clear count (a pack this pass may not take, or
            // whose copy the budget cannot pay, would keep the share over the bound for good), and only a pack whose
            // own dead share is at least the bound's is worth its copy.
            var share = (double)deadBytes / Math.Max(1, size);
            if (may && liveBytes <= budget && share >= DeadShare)
            {
                dead += deadBytes;
                candidates.Add((id, liveBytes, deadBytes, share));
            }
        }

        if (threshold <= 0)
        {
            return taken;
        }

        foreach (var c in candidates.OrderByDescending(c => c.Share).ThenBy(c => c.Id))
        {
            if (dead <= DeadShare * total)
            {
                break;
            }

            if (c.Live > budget)
            {
                continue;
            }

            taken.Add(c.Id);
            budget -= c.Live;
            dead -= c.Dead;
            total -= c.Dead;
        }

        return taken;
    }
}
