using System.Buffers;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// Decodes blobs by catalog row, delta chains included: a delta's bases are decoded first (recursively, at most
/// <see cref="PackFormat.MaxDepth"/> deep, so a cyclic catalog is damage rather than a hang) and kept in a small
/// least-recently-used cache, because the versions of one file share their bases. A slice (format 5) decodes its
/// group the same way, as its one base, so an export of a tree decodes each group once. Every blob, base or not, is
/// checked by <see cref="PackReader"/> (base digest, SHA-256), a slice by its own SHA-256 (its group, decoded only
/// to be sliced, is not hashed as a whole: its live bytes are each member's; <c>verify</c> still checks its CRC). Thread-safe: the cache
/// is locked; two threads may decode the same base at once (both check it; one copy is kept).
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

    /// <param name="sliced">A group decoded for its slices: each slice checks its own bytes by SHA-256.</param>
    private void Read(in BlobLocation loc, Span<byte> destination, int depth, bool sliced = false)
    {
        if (loc.IsSlice)
        {
            ReadSlice(loc, destination, depth);
            return;
        }

        if (!loc.IsDelta)
        {
            _packs.Read(loc, destination, hashed: !sliced);
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

    /// <summary>
    /// A slice is its group's raw bytes from its offset: the group is decoded (and checked) as a base, so it stays
    /// in the cache and the next member of the same group costs a copy; the member is checked by its own SHA-256.
    /// </summary>
    private void ReadSlice(in BlobLocation loc, Span<byte> destination, int depth)
    {
        if (loc.Bases.Length != 1 || destination.Length != loc.RawLength)
        {
            throw new BlobDamagedException(loc, Where(loc), $"a slice names {loc.Bases.Length} groups");
        }

        var (group, bytes) = Base(loc, loc.Bases[0], depth, BlobCodec.Group);
        if (loc.Offset < 0 || loc.Offset + loc.RawLength > bytes.Length)
        {
            throw new BlobDamagedException(loc, Where(loc), $"its bytes ({loc.RawLength} at {loc.Offset}) lie outside its group {group.Short} ({bytes.Length} bytes)");
        }

        var slice = bytes.AsSpan((int)loc.Offset, loc.RawLength);
        Span<byte> hash = stackalloc byte[32];
        Codecs.Sha256.HashData(slice, hash);
        if (!hash.SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, Where(loc), $"its bytes in group {group.Short} do not hash to its id (SHA-256 mismatch)");
        }

        slice.CopyTo(destination);
    }

    private (BlobId, byte[]) Base(in BlobLocation of, long row, int depth, BlobCodec? must = null)
    {
        BlobLocation baseLoc;
        try
        {
            baseLoc = _lookup(row);
        }
        catch (BlobMissingException)
        {
            throw new BlobDamagedException(of, Where(of), $"{(of.IsSlice ? "its group" : "its delta base")} (blob row {row}) is not in the catalog");
        }

        // A slice's base must be a group, and only a slice may name a group as its base: a group is never decoded
        // against as a delta prefix (it may hold up to 1 MiB, a prefix's whole allowance) nor a group sliced twice.
        if (must is { } codec ? baseLoc.Codec != codec : baseLoc.Codec == BlobCodec.Group)
        {
            throw new BlobDamagedException(of, Where(of), $"its base {baseLoc.Id.Short} (blob row {row}) has codec {(int)baseLoc.Codec}, which it cannot be decoded against");
        }

        lock (_lru)
        {
            if (_cache.TryGetValue(row, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return (baseLoc.Id, node.Value.Bytes);
            }
        }

        var bytes = GC.AllocateUninitializedArray<byte>(Math.Clamp(baseLoc.RawLength, 0, PackFormat.MaxRawFor(baseLoc.Codec))); // decoded over whole
        try
        {
            Read(baseLoc, bytes, depth + 1, sliced: must == BlobCodec.Group);
        }
        catch (BlobDamagedException e)
        {
            // One level of "its delta base ... is damaged", then the first cause: a chain 64 deep (or a cycle) would
            // otherwise nest 64 sentences into one line.
            const string Nested = "its delta base ";
            var cause = e.Reason.StartsWith(Nested, StringComparison.Ordinal) && e.Reason.IndexOf(": ", StringComparison.Ordinal) is var at and >= 0
                ? e.Reason[(at + 2)..]
                : e.Reason;
            throw new BlobDamagedException(of, Where(of), $"{(of.IsSlice ? "its group" : "its delta base")} {baseLoc.Id.Short} is damaged: {cause}");
        }

        lock (_lru)
        {
            if (!_cache.ContainsKey(row))
            {
                _cache[row] = _lru.AddFirst((row, bytes));
                _cached += bytes.Length;
            }

            while (_cached > CacheBytes && _lru.Last is { } last)
            {
                _lru.RemoveLast();
                _cache.Remove(last.Value.Row);
                _cached -= last.Value.Bytes.Length;
            }
        }

        return (baseLoc.Id, bytes);
    }

    private static string Where(in BlobLocation loc) => loc.IsSlice ? "its group" : PackFormat.RelativePath(loc.PackId);
}
