using System.Buffers;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// Decodes blobs by catalog row, delta chains included: a delta's bases are decoded first (recursively, at most
/// <see cref="PackFormat.MaxDepth"/> deep, so a cyclic catalog is damage rather than a hang) and kept in a small
/// least-recently-used cache, because the versions of one file share their bases. A slice (format 6) decodes its
/// group only as far as its own last byte, and keeps what it decoded in the same cache; a later member beyond that
/// decodes the whole group, once, so a reader of members in order decodes each group at most twice (the first
/// member's prefix, then the whole). A caller's <see cref="GroupBuffer"/> holds groups outside the cache instead (a
/// tree export's workers), and with one the cache is only read: a chain's intermediate bases are decoded into
/// arrays rented for the one decode that needs them. Every blob, base or not, is checked by <see cref="PackReader"/> (base digest,
/// SHA-256), a slice by its own SHA-256 (its group, decoded only to be sliced, is not hashed as a whole: its live
/// bytes are each member's; <c>verify</c> still checks its CRC). Thread-safe: the cache is locked, and so is the
/// catalog lookup of a base or a group (a catalog connection serves one thread at a time: a parallel materialization
/// of slices failed there); two threads may decode the same base at once (both check it; one copy is kept).
/// </summary>
public sealed class BlobReader
{
    private const long CacheBytes = 64L << 20;
    private readonly Func<long, BlobLocation> _lookup;
    private readonly Lock _lookupLock = new();
    private readonly Dictionary<long, BlobLocation> _groups = [];
    private readonly PackReader _packs;
    private readonly Dictionary<long, LinkedListNode<(long Row, byte[] Bytes)>> _cache = [];
    private readonly LinkedList<(long Row, byte[] Bytes)> _lru = new();
    private long _cached;

    private readonly bool _wholeGroups;

    /// <param name="lookup">The catalog row of a blob; throws <see cref="BlobMissingException"/> when there is none.</param>
    /// <param name="wholeGroups">Decode a group whole at its first use, not up to the member: for a caller that reads
    /// members of a group in no particular order (the writer's delta bases), where a prefix is most often followed by
    /// the whole group anyway.</param>
    public BlobReader(Func<long, BlobLocation> lookup, PackReader packs, bool wholeGroups = false)
    {
        _lookup = lookup;
        _packs = packs;
        _wholeGroups = wholeGroups;
    }

    /// <summary>How many decoded blobs and groups the shared cache holds.</summary>
    internal int CachedBlobs
    {
        get
        {
            lock (_lru)
            {
                return _cache.Count;
            }
        }
    }

    /// <summary>The catalog row of blob <paramref name="row"/>, looked up under the reader's lock (safe from any thread); throws <see cref="BlobMissingException"/>.</summary>
    public BlobLocation Location(long row) => Lookup(row);

    private BlobLocation Lookup(long row)
    {
        lock (_lookupLock)
        {
            return _lookup(row);
        }
    }

    /// <summary>
    /// A group's row, looked up once per reader: a big file's version names thousands of slices of a few groups,
    /// and a catalog lookup per slice made its rebuild three times slower than one of whole blobs (W5).
    /// </summary>
    private BlobLocation GroupLocation(long row)
    {
        lock (_lookupLock)
        {
            if (!_groups.TryGetValue(row, out var group))
            {
                group = _lookup(row);
                _groups[row] = group;
            }

            return group;
        }
    }

    /// <summary>
    /// Decodes the blob at <paramref name="loc"/> into <paramref name="destination"/> (exactly its raw length). With
    /// <paramref name="held"/>, slices of the group it holds (the blob itself, or a delta base at any depth) come from
    /// that buffer, decoding the group into it at the first one.
    /// </summary>
    public void Read(in BlobLocation loc, Span<byte> destination, GroupBuffer? held = null) => Read(loc, destination, 0, held);

    /// <summary>
    /// A slice of the group <paramref name="held"/> holds (<see cref="GroupBuffer.Holds"/>), checked by its SHA-256
    /// and left in place: the bytes are valid until the buffer is pointed at another group. Saves the copy
    /// <see cref="Read"/> makes for a caller that only writes the bytes out.
    /// </summary>
    public ReadOnlyMemory<byte> ReadHeld(in BlobLocation slice, GroupBuffer held)
    {
        if (!held.Holds(slice))
        {
            throw new ArgumentException($"blob row {slice.BlobRowId} is not a slice of group row {held.Group}", nameof(slice));
        }

        return CheckedSlice(slice, held).AsMemory((int)slice.Offset, slice.RawLength);
    }

    /// <summary>
    /// The group the bytes of <paramref name="loc"/> start from: a slice's group, or a delta's first base's, followed
    /// down (at most <see cref="PackFormat.MaxDepth"/> deep); null for a whole blob, or when the chain cannot be
    /// followed (the read itself then reports the damage). What a tree export orders its files by.
    /// </summary>
    public long? GroupOf(in BlobLocation loc)
    {
        var at = loc;
        for (var depth = 0; depth < PackFormat.MaxDepth; depth++)
        {
            if (at.IsSlice)
            {
                return at.Bases.Length == 1 ? at.Bases[0] : null;
            }

            if (!at.IsDelta || at.Bases.Length == 0)
            {
                return null;
            }

            try
            {
                at = Lookup(at.Bases[0]);
            }
            catch (BlobMissingException)
            {
                return null;
            }
        }

        return null;
    }

    private void Read(in BlobLocation loc, Span<byte> destination, int depth, GroupBuffer? held)
    {
        if (loc.IsSlice)
        {
            if (destination.Length != loc.RawLength)
            {
                throw new BlobDamagedException(loc, Where(loc), $"a slice names {loc.Bases.Length} groups");
            }

            CheckedSlice(loc, held).AsSpan((int)loc.Offset, loc.RawLength).CopyTo(destination);
            return;
        }

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

        if (loc.Bases.Length == 1)
        {
            // One base (every delta the writer makes): decoded against it where it lies, nothing copied or allocated.
            var only = Base(loc, loc.Bases[0], depth, held);
            try
            {
                Span<byte> digest = stackalloc byte[Sha256.HashSize];
                PackFormat.BaseDigest([only.Id], digest);
                _packs.Read(loc, destination, only.Bytes.AsSpan(only.Offset, only.Length), digest);
            }
            finally
            {
                only.Release();
            }

            return;
        }

        var bases = new DecodedBase[loc.Bases.Length];
        var prefix = Array.Empty<byte>();
        try
        {
            var total = 0;
            for (var i = 0; i < bases.Length; i++)
            {
                var b = Base(loc, loc.Bases[i], depth, held);
                if (held is not null && held.IsSide(b.Bytes))
                {
                    // The next base may be a slice of another group, decoded into the same side buffer.
                    var copy = ArrayPool<byte>.Shared.Rent(b.Length);
                    b.Bytes.AsSpan(b.Offset, b.Length).CopyTo(copy);
                    b = new DecodedBase(b.Id, copy, 0, b.Length, true);
                }

                bases[i] = b;
                total += b.Length;
            }

            if (total > PackFormat.MaxPrefixLength)
            {
                throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"its delta bases hold {total} bytes, more than a prefix may");
            }

            prefix = ArrayPool<byte>.Shared.Rent(Math.Max(1, total));
            var at = 0;
            foreach (var b in bases)
            {
                b.Bytes.AsSpan(b.Offset, b.Length).CopyTo(prefix.AsSpan(at));
                at += b.Length;
            }

            _packs.Read(loc, destination, prefix.AsSpan(0, total), PackFormat.BaseDigest(bases.Select(b => b.Id)));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(prefix);
            foreach (var b in bases)
            {
                b.Release();
            }
        }
    }

    /// <summary>
    /// A delta base's bytes: <see cref="Bytes"/>[<see cref="Offset"/>..+<see cref="Length"/>], in a held group, the
    /// cache, or an array rented for this one decode (<see cref="Rented"/>), which <see cref="Release"/> returns.
    /// </summary>
    private readonly record struct DecodedBase(BlobId Id, byte[] Bytes, int Offset, int Length, bool Rented)
    {
        public void Release()
        {
            if (Rented)
            {
                ArrayPool<byte>.Shared.Return(Bytes);
            }
        }
    }

    /// <summary>
    /// A slice is its group's raw bytes from its offset: the group is decoded up to the slice's end (or whole, when
    /// a shorter prefix of it is cached already) and kept in the cache, so the next member of the same group costs a
    /// copy; or, with <paramref name="held"/>, decoded whole into one of its buffers (see <see cref="GroupBuffer"/>).
    /// The member is checked by its own SHA-256. Returns the array the group lies in: the slice is its bytes from
    /// <see cref="BlobLocation.Offset"/>.
    /// </summary>
    private byte[] CheckedSlice(in BlobLocation loc, GroupBuffer? held)
    {
        if (loc.Bases.Length != 1)
        {
            throw new BlobDamagedException(loc, Where(loc), $"a slice names {loc.Bases.Length} groups");
        }

        var (group, bytes) = Group(loc, held);
        var slice = bytes.AsSpan((int)loc.Offset, loc.RawLength);
        Span<byte> hash = stackalloc byte[32];
        Sha256.HashData(slice, hash);
        if (!hash.SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, Where(loc), $"its bytes in group {group.Short} do not hash to its id (SHA-256 mismatch)");
        }

        return bytes;
    }

    /// <summary>
    /// The group of <paramref name="slice"/>, decoded at least to the slice's end; with <paramref name="held"/>, whole
    /// into its buffer when it holds the group, else from the cache or whole into its side buffer.
    /// </summary>
    private (BlobId, byte[]) Group(in BlobLocation slice, GroupBuffer? held)
    {
        var row = slice.Bases[0];
        BlobLocation group;
        try
        {
            group = GroupLocation(row);
        }
        catch (BlobMissingException)
        {
            throw new BlobDamagedException(slice, Where(slice), $"its group (blob row {row}) is not in the catalog");
        }

        if (group.Codec != BlobCodec.Group)
        {
            throw new BlobDamagedException(slice, Where(slice), $"its base {group.Id.Short} (blob row {row}) has codec {(int)group.Codec}, which it cannot be decoded against");
        }

        var end = slice.Offset + slice.RawLength;
        if (slice.Offset < 0 || end > group.RawLength || group.RawLength > PackFormat.MaxGroupLength)
        {
            throw new BlobDamagedException(slice, Where(slice), $"its bytes ({slice.RawLength} at {slice.Offset}) lie outside its group {group.Id.Short} ({group.RawLength} bytes)");
        }

        if (held is not null && held.Holds(slice))
        {
            if (held.Decoded != row)
            {
                held.Decoded = -1;
                DecodeWhole(slice, group, held.Bytes, held);
                held.Decoded = row;
            }

            return (group.Id, held.Bytes);
        }

        bool shorter;
        lock (_lru)
        {
            shorter = _cache.TryGetValue(row, out var node);
            if (shorter && node!.Value.Bytes.Length >= end)
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return (group.Id, node.Value.Bytes);
            }
        }

        if (held is not null)
        {
            if (held.SideDecoded != row)
            {
                held.SideDecoded = -1;
                DecodeWhole(slice, group, held.SideBytes, held);
                held.SideDecoded = row;
            }

            return (group.Id, held.SideBytes);
        }

        // A member past the prefix decoded before decodes the whole group: reading a group's members in order (an
        // export, a regroup) then costs two decodes, not one per member.
        var bytes = GC.AllocateUninitializedArray<byte>(shorter || _wholeGroups ? group.RawLength : (int)end);
        try
        {
            _packs.ReadGroupPrefix(group, bytes);
        }
        catch (BlobDamagedException e)
        {
            throw new BlobDamagedException(slice, Where(slice), $"its group {group.Id.Short} is damaged: {e.Reason}");
        }

        Cache(row, bytes);
        return (group.Id, bytes);
    }

    /// <summary>Decodes <paramref name="group"/> whole into <paramref name="into"/>, its record read into <paramref name="held"/>'s record buffer.</summary>
    private void DecodeWhole(in BlobLocation slice, in BlobLocation group, byte[] into, GroupBuffer held)
    {
        // A stored length no group can have is left to the reader to name (and allocates nothing here).
        var record = group.StoredLength >= 0 && group.StoredLength <= Zstd.CompressBound(PackFormat.MaxGroupLength)
            ? held.Record(PackFormat.RecordSize(group.StoredLength))
            : null;
        try
        {
            _packs.ReadGroupPrefix(group, into.AsSpan(0, group.RawLength), record);
        }
        catch (BlobDamagedException e)
        {
            throw new BlobDamagedException(slice, Where(slice), $"its group {group.Id.Short} is damaged: {e.Reason}");
        }
    }

    private DecodedBase Base(in BlobLocation of, long row, int depth, GroupBuffer? held)
    {
        BlobLocation baseLoc;
        try
        {
            baseLoc = Lookup(row);
        }
        catch (BlobMissingException)
        {
            throw new BlobDamagedException(of, Where(of), $"its delta base (blob row {row}) is not in the catalog");
        }

        // Only a slice may name a group: a group is never decoded against as a delta prefix (it may hold up to
        // 1 MiB, a prefix's whole allowance).
        if (baseLoc.Codec == BlobCodec.Group)
        {
            throw new BlobDamagedException(of, Where(of), $"its base {baseLoc.Id.Short} (blob row {row}) has codec {(int)baseLoc.Codec}, which it cannot be decoded against");
        }

        // With a caller's buffers, a slice is used where it lies in them or in the cache (checked, not copied,
        // not cached again).
        if (held is not null && baseLoc.IsSlice)
        {
            try
            {
                return new DecodedBase(baseLoc.Id, CheckedSlice(baseLoc, held), (int)baseLoc.Offset, baseLoc.RawLength, false);
            }
            catch (BlobDamagedException e)
            {
                throw BaseDamaged(of, baseLoc, e);
            }
        }

        lock (_lru)
        {
            if (_cache.TryGetValue(row, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                return new DecodedBase(baseLoc.Id, node.Value.Bytes, 0, node.Value.Bytes.Length, false);
            }
        }

        // With a caller's buffer (a tree export: each version decoded once, its bases are seldom another file's),
        // an intermediate base of a chain is decoded into a rented array given back after the one decode that
        // needs it; kept in the cache, each was a new array surviving into the export's garbage collection.
        var length = Math.Clamp(baseLoc.RawLength, 0, PackFormat.MaxRawLength); // decoded over whole
        var rented = held is not null;
        var array = rented ? ArrayPool<byte>.Shared.Rent(length) : GC.AllocateUninitializedArray<byte>(length);
        try
        {
            Read(baseLoc, array.AsSpan(0, length), depth + 1, held);
        }
        catch (BlobDamagedException e)
        {
            if (rented)
            {
                ArrayPool<byte>.Shared.Return(array);
            }

            throw BaseDamaged(of, baseLoc, e);
        }
        catch
        {
            if (rented)
            {
                ArrayPool<byte>.Shared.Return(array);
            }

            throw;
        }

        if (!rented)
        {
            Cache(row, array);
        }

        return new DecodedBase(baseLoc.Id, array, 0, length, rented);
    }

    private static BlobDamagedException BaseDamaged(in BlobLocation of, in BlobLocation baseLoc, BlobDamagedException e)
    {
        // One level of "its delta base ... is damaged", then the first cause: a chain 64 deep (or a cycle) would
        // otherwise nest 64 sentences into one line.
        const string Nested = "its delta base ";
        var cause = e.Reason.StartsWith(Nested, StringComparison.Ordinal) && e.Reason.IndexOf(": ", StringComparison.Ordinal) is var at and >= 0
            ? e.Reason[(at + 2)..]
            : e.Reason;
        return new BlobDamagedException(of, Where(of), $"its delta base {baseLoc.Id.Short} is damaged: {cause}");
    }

    /// <summary>Keeps decoded bytes of blob row <paramref name="row"/>, replacing a shorter prefix of them.</summary>
    private void Cache(long row, byte[] bytes)
    {
        lock (_lru)
        {
            if (_cache.TryGetValue(row, out var old))
            {
                if (old.Value.Bytes.Length >= bytes.Length)
                {
                    return;
                }

                _lru.Remove(old);
                _cached -= old.Value.Bytes.Length;
            }

            _cache[row] = _lru.AddFirst((row, bytes));
            _cached += bytes.Length;
            while (_cached > CacheBytes && _lru.Last is { } last)
            {
                _lru.RemoveLast();
                _cache.Remove(last.Value.Row);
                _cached -= last.Value.Bytes.Length;
            }
        }
    }

    private static string Where(in BlobLocation loc) => loc.IsSlice ? "its group" : PackFormat.RelativePath(loc.PackId);
}
