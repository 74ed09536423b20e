namespace DiffKeeper.Storage;

/// <summary>
/// What rebuilding a version costs: the raw bytes of every blob decoding its blobs decodes, themselves and their
/// delta bases, transitively, each once (<see cref="BlobReader"/> caches the bases a rebuild shares). Compaction keeps every
/// version's rebuild (the union of its blobs' closures) within <see cref="Budget"/> of its size, and <c>stats</c>
/// reports the worst version (docs/store-format.md, "Compaction, prune and garbage collection").
/// </summary>
public static class RebuildCost
{
    /// <summary>Versions below this size are allowed as much as one of this size: decoding 64 KiB is as cheap as decoding less.</summary>
    public const int Floor = 64 << 10;

    /// <summary>The default bound: a rebuild decodes at most this many times the bytes it produces.</summary>
    public const double DefaultBound = 32;

    /// <summary>The bytes rebuilding a version of <paramref name="size"/> bytes may decode under <paramref name="bound"/>.</summary>
    public static double Budget(double bound, long size) => bound * Math.Max(size, Floor);

    /// <summary>
    /// <paramref name="row"/> and every blob row it decodes through. A cycle (a damaged catalog) ends where it
    /// meets a row already taken.
    /// </summary>
    public static HashSet<long> Closure<T>(long row, IReadOnlyDictionary<long, T> bases)
        where T : IEnumerable<long>
    {
        var seen = new HashSet<long> { row };
        var stack = new Stack<long>([row]);
        while (stack.TryPop(out var r))
        {
            if (bases.TryGetValue(r, out var next))
            {
                foreach (var b in next)
                {
                    if (seen.Add(b))
                    {
                        stack.Push(b);
                    }
                }
            }
        }

        return seen;
    }
}
