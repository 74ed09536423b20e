using System.Buffers;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// Decodes blobs by catalog row, delta chains included: a delta's bases are decoded first (recursively, at most
/// <see cref="PackFormat.MaxDepth"/> deep, so a cyclic catalog is damage rather than a hang) and kept in a small
/// least-recently-used cache, because the versions of one file share their bases. Every blob, base or not, is
/// checked by <see cref="PackReader"/> (CRC, base digest, SHA-256). Not thread-safe.
/// </summary>
public sealed class BlobReader
{
    private const long CacheBytes = 64L << 20;
    private readonly Func<long, BlobLocation> _lookup;
    private readonly PackReader _packs;
    private readonly Dictionary<long, LinkedListNode<(long Row, byte[] Bytes)>> _cache = [];
    private readonly LinkedList<(long Row, byte[] Bytes)> _lru = new();
    private long _cached;

    /// <param name="lookup">The catalog row of a blob; throws <see cref="BlobMissingException"/> when there is none.</param>
    public BlobReader(Func<long, BlobLocation> lookup, PackReader packs)
    {
        _lookup = lookup;
        _packs = packs;
    }

    /// <summary>Decodes blob row <paramref name="rowId"/> into <paramref name="destination"/> (exactly its raw length, which <paramref name="loc"/> gives).</summary>
    public void Read(in BlobLocation loc, Span<byte> destination) => Read(loc, destination, 0);

    private void Read(in BlobLocation loc, Span<byte> destination, int depth)
    {
        if (!loc.IsDelta)
        {
            _packs.Read(loc, destination);
            return;
        }

        if (depth >= PackFormat.MaxDepth || loc.Bases.Length is 0 or > PackFormat.MaxBases)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), depth >= PackFormat.MaxDepth
                ? $"its delta chain is deeper than {PackFormat.MaxDepth} (or cyclic)"
                : $"it names {loc.Bases.Length} delta bases");
        }

        var bases = new (BlobId Id, byte[] Bytes)[loc.Bases.Length];
        var total = 0;
        for (var i = 0; i < bases.Length; i++)
        {
            bases[i] = Base(loc, loc.Bases[i], depth);
            total += bases[i].Bytes.Length;
        }

        if (total > PackFormat.MaxPrefixLength)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"its delta bases hold {total} bytes, more than a prefix may");
        }

        var prefix = ArrayPool<byte>.Shared.Rent(Math.Max(1, total));
        try
        {
            var at = 0;
            foreach (var (_, bytes) in bases)
            {
                bytes.CopyTo(prefix, at);
                at += bytes.Length;
            }

            _packs.Read(loc, destination, prefix.AsSpan(0, total), PackFormat.BaseDigest(bases.Select(b => b.Id)));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(prefix);
        }
    }

    private (BlobId, byte[]) Base(in BlobLocation of, long row, int depth)
    {
        BlobLocation baseLoc;
        try
        {
            baseLoc = _lookup(row);
        }
        catch (BlobMissingException)
        {
            throw new BlobDamagedException(of, PackFormat.RelativePath(of.PackId), $"its delta base (blob row {row}) is not in the catalog");
        }

        if (_cache.TryGetValue(row, out var node))
        {
            _lru.Remove(node);
            _lru.AddFirst(node);
            return (baseLoc.Id, node.Value.Bytes);
        }

        var bytes = new byte[Math.Clamp(baseLoc.RawLength, 0, PackFormat.MaxRawLength)];
        try
        {
            Read(baseLoc, bytes, depth + 1);
        }
        catch (BlobDamagedException e)
        {
            // One level of "its delta base ... is damaged", then the first cause: a chain 64 deep (or a cycle) would
            // otherwise nest 64 sentences into one line.
            const string Nested = "its delta base ";
            var cause = e.Reason.StartsWith(Nested, StringComparison.Ordinal) && e.Reason.IndexOf(": ", StringComparison.Ordinal) is var at and >= 0
                ? e.Reason[(at + 2)..]
                : e.Reason;
            throw new BlobDamagedException(of, PackFormat.RelativePath(of.PackId), $"its delta base {baseLoc.Id.Short} is damaged: {cause}");
        }

        _cache[row] = _lru.AddFirst((row, bytes));
        _cached += bytes.Length;
        while (_cached > CacheBytes && _lru.Last is { } last)
        {
            _lru.RemoveLast();
            _cache.Remove(last.Value.Row);
            _cached -= last.Value.Bytes.Length;
        }

        return (baseLoc.Id, bytes);
    }
}
