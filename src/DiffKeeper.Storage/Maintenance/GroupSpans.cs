namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// How the slices of one group cover its bytes. Slices overlap: a file's states while it grew are slices from one
/// start, each a prefix of the next (<see cref="Packs.IngestGroup"/> writes them so while recording, and
/// <see cref="Grouper"/> when it groups), so a slice's raw length says little of what it costs its group. A 1M-write
/// recording's 75 groups held 97.6 MB of slices in 8.9 MB of bytes; a pass that counted raw lengths judged the
/// superseded prefixes worth re-encoding as deltas (~110 bytes each, against ~0 in the group) and grew the packs
/// 707 → 997 KB (docs/benchmarks.md, "the pass after the session").
/// </summary>
internal static class GroupSpans
{
    /// <summary>The bytes at least one of <paramref name="spans"/> covers.</summary>
    public static long Covered(IEnumerable<(long Start, int Length)> spans)
    {
        long covered = 0, end = long.MinValue;
        foreach (var (start, length) in spans.OrderBy(s => s.Start))
        {
            var to = start + length;
            if (to <= end)
            {
                continue;
            }

            covered += to - Math.Max(start, end);
            end = to;
        }

        return covered;
    }

    /// <summary>
    /// For every slice (its row, its group's row, its start and length in the group), the bytes of its group only it
    /// covers (<see cref="Own"/>), by row.
    /// </summary>
    public static Dictionary<long, long> OwnBySlice(IEnumerable<(long Row, long Group, long Start, int Length)> slices)
    {
        var own = new Dictionary<long, long>();
        foreach (var group in slices.GroupBy(s => s.Group))
        {
            var list = group.ToList();
            var bytes = Own(list.Select(s => (s.Start, s.Length)).ToList());
            for (var i = 0; i < list.Count; i++)
            {
                own[list[i].Row] = bytes[i];
            }
        }

        return own;
    }

    /// <summary>
    /// For each span, the bytes no other span covers: what the group would lose if only that slice left it. The
    /// shorter states of a grown file own nothing; the longest owns what it added last.
    /// </summary>
    public static long[] Own(IReadOnlyList<(long Start, int Length)> spans)
    {
        var own = new long[spans.Count];
        var edges = new List<(long At, int Span, bool Opens)>(spans.Count * 2);
        for (var i = 0; i < spans.Count; i++)
        {
            if (spans[i].Length > 0)
            {
                edges.Add((spans[i].Start, i, true));
                edges.Add((spans[i].Start + spans[i].Length, i, false));
            }
        }

        // Closings before openings at one place: spans that only touch do not overlap.
        edges.Sort((a, b) => a.At != b.At ? a.At.CompareTo(b.At) : a.Opens.CompareTo(b.Opens));
        var open = new HashSet<int>();
        long from = 0;
        foreach (var (at, span, opens) in edges)
        {
            if (open.Count == 1 && at > from)
            {
                foreach (var only in open)
                {
                    own[only] += at - from;
                }
            }

            from = at;
            if (opens)
            {
                open.Add(span);
            }
            else
            {
                open.Remove(span);
            }
        }

        return own;
    }
}
