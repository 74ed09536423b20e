using System.Buffers;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What compaction did.</summary>
public sealed record CompactionResult(long Examined, long Encoded, long BytesBefore, long BytesAfter);

/// <summary>
/// Reverse-delta compaction (docs/store-format.md, "Compaction, prune and garbage collection"). Walks each logical
/// path's file versions from the newest to the oldest; a chunk that the next-newer version no longer holds is
/// re-encoded as a delta against that version's chunks at the same place (corrected for shifts by the nearest
/// chunk both versions share), when that saves a quarter of its record. The newest version's chunks stay whole, so the state a
/// restore needs decodes without a chain; a chunk stays whole too when some version whose rebuild decodes it would
/// then decode more than the rebuild bound allows (<see cref="RebuildCost"/>), or when a chain would exceed
/// the optional depth bound (<c>snapshotInterval - 1</c> deltas). Encoding happens on the maintenance thread into the maintenance
/// pack, fsynced before the step that moves the rows; the old records become garbage for the repack step. A row
/// moves only from where this pass read it (compare and set), and never when a version the writer added since
/// the pass began names it (it may be a path's newest content now).
/// </summary>
internal sealed class Compactor
{
    private const long BytesPerStep = 64L << 20;
    private const int Slack = 4096;

    private readonly TraceReader _reader;
    private readonly IWriterSteps _steps;
    private readonly MaintenancePack _output;
    private readonly BlobCodec _codec;
    private readonly int _maxDepth;
    private readonly double _rebuildBound;
    private readonly int _rowsPerStep;
    private readonly HashSet<long> _examined;
    private readonly Dictionary<long, long[]> _bases = [];
    private readonly Dictionary<long, List<long>> _dependents = [];
    private readonly Dictionary<long, (BlobCodec Codec, int Stored, int Raw)> _rows = [];
    private readonly Dictionary<long, long> _sliceStarts = [];
    private readonly Dictionary<long, long> _sliceOwn = [];
    private readonly List<Move> _pending = [];
    private readonly Dictionary<long, List<Rebuild>> _decodedBy = [];
    private long _pendingBytes;
    private long _encoded;
    private long _bytesBefore;
    private long _bytesAfter;

    private Compactor(TraceReader reader, IWriterSteps steps, MaintenancePack output, BlobCodec codec, int? snapshotInterval, double rebuildBound,
        int rowsPerStep, HashSet<long> examined)
    {
        _reader = reader;
        _steps = steps;
        _output = output;
        _codec = codec;
        // Readers refuse chains deeper than PackFormat.MaxDepth: without a depth bound, the cost bound alone decides below it.
        _maxDepth = Math.Min(PackFormat.MaxDepth - 1, Math.Max(0, (snapshotInterval ?? PackFormat.MaxDepth) - 1));
        _rebuildBound = rebuildBound;
        _rowsPerStep = rowsPerStep;
        _examined = examined;
    }

    /// <summary>
    /// Compacts; <paramref name="examined"/> holds the rows earlier passes already considered (they are skipped,
    /// and the rows this pass considers are added).
    /// </summary>
    public static CompactionResult Run(TraceReader reader, PathHistories histories, IWriterSteps steps, MaintenancePack output, BlobCodec codec, int? snapshotInterval,
        double rebuildBound, int rowsPerStep, HashSet<long> examined, IProgress<string>? progress = null)
    {
        if (codec is not (BlobCodec.ZstdDelta or BlobCodec.BsDiff))
        {
            throw new ArgumentOutOfRangeException(nameof(codec), codec, "compaction needs a delta codec");
        }

        return new Compactor(reader, steps, output, codec, snapshotInterval, rebuildBound, rowsPerStep, examined).Run(histories, progress);
    }

    /// <param name="histories">Read before (in an earlier snapshot): versions are never changed but by prune and
    /// sweep, which ran before, so every blob they name is in the snapshot read here.</param>
    private CompactionResult Run(PathHistories histories, IProgress<string>? progress)
    {
        using (_reader.Snapshot())
        {
            foreach (var loc in _reader.AllBlobs())
            {
                _rows[loc.BlobRowId] = (loc.Codec, loc.StoredLength, loc.RawLength);
                if (loc.HasBases) // a slice's rebuild decodes its group
                {
                    SetBases(loc.BlobRowId, loc.Bases);
                }

                if (loc.IsSlice)
                {
                    _sliceStarts[loc.BlobRowId] = loc.Offset;
                }
            }
        }

        LoadRebuilds(histories);
        LoadSliceOwn();

        var heads = histories.HeadBlobs();
        var due = Grouper.DueGroups(_rows, _bases, _sliceStarts, heads);
        long examined = 0;
        var done = 0;
        foreach (var versions in histories.ByPath.Values)
        {
            var files = versions.Where(v => v is { Kind: EntryKind.File, Pruned: false, Extents: not null }).ToList();
            for (var i = files.Count - 2; i >= 0; i--)
            {
                if (!ExtentMap.TryDecode(files[i].Extents!, files[i].Size, out var old) ||
                    !ExtentMap.TryDecode(files[i + 1].Extents!, files[i + 1].Size, out var newer))
                {
                    continue; // verify reports malformed maps; compaction leaves them alone
                }

                var newerRows = newer.Select(e => e.BlobRowId).ToHashSet();
                var shifts = Shifts(old, newer);
                for (var k = 0; k < old.Count; k++)
                {
                    // A slice moves only out of a group this pass regroups: re-encoding it costs decoding its
                    // group, and leaves its bytes there, dead, until the group is regrouped. Until then it stays a
                    // slice, and is not counted as examined, so the pass that regroups its group takes it.
                    var row = old[k].BlobRowId;
                    if (newerRows.Contains(row) || heads.Contains(row) ||
                        !_rows.TryGetValue(row, out var current) || current.Codec is BlobCodec.ZstdDelta or BlobCodec.BsDiff or BlobCodec.Group ||
                        (current.Codec == BlobCodec.Slice && !(_bases.TryGetValue(row, out var g) && g.Length == 1 && due.Contains(g[0]))) || !_examined.Add(row))
                    {
                        continue;
                    }

                    _steps.Stopping.ThrowIfCancellationRequested();
                    examined++;
                    // Bases too deep for the depth bound, or too costly to decode for the rebuild bound, are dropped
                    // (a cheaper base still serves); only when none is left does the chunk stay whole.
                    var height = Height(row);
                    var candidates = WithinRebuildBound(row, Candidates(old, k, newer, shifts)
                        .Where(c => !DependsOn(c, row) && 1 + Depth(c) + height <= _maxDepth && !IsGroup(c)).ToList());
                    if (candidates.Length == 0)
                    {
                        continue;
                    }

                    if (current.Codec == BlobCodec.Slice)
                    {
                        // A slice's delta is a record of its own: it must save a quarter of the slice's share with its header.
                        var share = SliceShare(row);
                        if (SliceCannotPay(share))
                        {
                            _examined.Remove(row); // not judged: a later pass of this maintainer may find it owning more
                            continue;
                        }

                        Encode(row, candidates, share, share / 4 * 3 - PackFormat.RecordSize(0));
                    }
                    else
                    {
                        Encode(row, candidates, current.Stored, current.Stored / 4 * 3);
                    }
                    if (_pending.Count >= _rowsPerStep || _pendingBytes >= BytesPerStep)
                    {
                        Flush();
                    }
                }
            }

            if (++done % 1000 == 0)
            {
                progress?.Report($"compacting: {done} of {histories.ByPath.Count} paths");
            }
        }

        Flush();
        return new CompactionResult(examined, _encoded, _bytesBefore, _bytesAfter);
    }

    /// <summary>
    /// What a slice's bytes take of its group's record: the bytes only it covers (<see cref="GroupSpans.Own"/>), in
    /// proportion; what a delta must save a quarter of (the group's record shrinks by about that much when
    /// <see cref="Grouper"/> regroups it, in this pass). A shorter state of a grown file owns nothing and stays a slice.
    /// </summary>
    private int SliceShare(long row) =>
        _bases.TryGetValue(row, out var g) && g.Length == 1 && _rows.TryGetValue(g[0], out var group) && group.Raw > 0
            ? (int)Math.Min(int.MaxValue, (long)group.Stored * _sliceOwn.GetValueOrDefault(row) / group.Raw)
            : 0;

    /// <summary>The bytes each slice alone covers in its group, from the rows read at the start of the pass.</summary>
    private void LoadSliceOwn()
    {
        foreach (var (row, own) in GroupSpans.OwnBySlice(_sliceStarts
            .Where(s => _bases.TryGetValue(s.Key, out var g) && g.Length == 1)
            .Select(s => (s.Key, _bases[s.Key][0], s.Value, _rows[s.Key].Raw))))
        {
            _sliceOwn[row] = own;
        }
    }

    /// <summary>
    /// Whether a slice whose group stores <paramref name="groupStored"/> bytes for <paramref name="groupRaw"/>, of which
    /// it alone covers <paramref name="own"/>, takes too little of its group for any delta of it to pay for its record
    /// (<see cref="TraceWriter.HasMaintenanceWork"/> skips the pass for such slices).
    /// </summary>
    internal static bool SliceCannotPay(int groupStored, int groupRaw, long own) =>
        SliceCannotPay(groupRaw > 0 ? (int)Math.Min(int.MaxValue, (long)groupStored * own / groupRaw) : 0);

    private static bool SliceCannotPay(int share) => share / 4 * 3 <= PackFormat.RecordSize(0);

    /// <summary>A group (a file chunk deduplicated against one) is never a delta base: readers refuse that.</summary>
    private bool IsGroup(long row) => _rows.TryGetValue(row, out var r) && r.Codec == BlobCodec.Group;

    /// <summary>Makes the encoded records durable, then moves their rows in one step.</summary>
    private void Flush()
    {
        if (_pending.Count == 0)
        {
            return;
        }

        var moves = _pending.ToList();
        _pending.Clear();
        _pendingBytes = 0;
        var sizes = _output.Sync();
        var applied = _steps.Run("compact", writer =>
        {
            writer.Begin();
            MaintenancePack.RecordSizes(writer, sizes);
            var done = new List<Move>();
            using (var update = writer.Database.Prepare(
                "UPDATE blobs SET pack_id = ?4, offset = ?5, stored_len = ?6, codec = ?7, bases = ?8 WHERE id = ?1 AND pack_id = ?2 AND offset = ?3"))
            {
                foreach (var m in moves)
                {
                    if (writer.ReferencedSinceTracking.Contains(m.Row))
                    {
                        continue;
                    }

                    update.Bind(1, m.Row).Bind(2, m.FromPack).Bind(3, m.FromOffset).Bind(4, m.Pack).Bind(5, m.Offset)
                        .Bind(6, (long)m.Stored).Bind(7, (long)_codec).Bind(8, PackFormat.EncodeBases(m.Bases)).Run();
                    if (writer.Database.Changes == 1)
                    {
                        done.Add(m);
                    }
                }
            }

            writer.Commit();
            writer.ForgetBlobs(done.Select(m => m.Id));
            return done;
        });
        foreach (var m in applied)
        {
            _encoded++;
            _bytesBefore += PackFormat.RecordSize(m.StoredBefore);
            _bytesAfter += PackFormat.RecordSize(m.Stored);
        }
    }

    /// <summary>Appends the delta of <paramref name="row"/> when it takes at most <paramref name="bound"/> bytes
    /// (a quarter less than what it replaces, <paramref name="limit"/>) and queues its move.</summary>
    private void Encode(long row, long[] bases, int limit, int bound)
    {
        BlobLocation loc;
        BlobLocation[] baseLocs;
        try
        {
            loc = _reader.Blob(row);
            baseLocs = bases.Select(_reader.Blob).ToArray();
        }
        catch (BlobMissingException)
        {
            return; // a version names a blob row the catalog lacks: damage, verify's to report; never build on it
        }

        var total = baseLocs.Sum(b => b.RawLength);
        var raw = ArrayPool<byte>.Shared.Rent(Math.Max(1, loc.RawLength));
        var prefix = ArrayPool<byte>.Shared.Rent(Math.Max(1, total));
        Native.BufferPrefault.Once(raw, loc.RawLength); // the reads below fill them: fresh in a short process
        Native.BufferPrefault.Once(prefix, total);
        try
        {
            try
            {
                _reader.Blobs.Read(loc, raw.AsSpan(0, loc.RawLength));
                var at = 0;
                foreach (var b in baseLocs)
                {
                    _reader.Blobs.Read(b, prefix.AsSpan(at, b.RawLength));
                    at += b.RawLength;
                }
            }
            catch (BlobDamagedException)
            {
                return; // damaged data is verify's to report; never build on it
            }

            // Worth it only when it saves a quarter of the record: the whole record it replaces stays in its pack as
            // garbage until that pack is repacked, which a big pack is only once a tenth of it is garbage.
            var payload = DeltaCodec.Encode(_codec, prefix.AsSpan(0, total), raw.AsSpan(0, loc.RawLength), bound);
            if (payload is null)
            {
                return;
            }

            var (pack, offset) = _output.Append(loc.Id, _codec, loc.RawLength, payload, PackFormat.BaseDigest(baseLocs.Select(b => b.Id)));
            _pending.Add(new Move(row, loc.Id, loc.PackId, loc.Offset, pack, offset, payload.Length, limit, bases));
            _pendingBytes += PackFormat.RecordSize(payload.Length);
            // Later decisions of this pass (depth, cycles) count this delta as made; if its move is refused, the
            // row stays whole and those decisions were only more cautious than needed.
            _rows[row] = (_codec, payload.Length, loc.RawLength);
            SetBases(row, bases);
            AddToRebuilds(row, bases);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(raw);
            ArrayPool<byte>.Shared.Return(prefix);
        }
    }

    private sealed record Move(long Row, BlobId Id, long FromPack, long FromOffset, long Pack, long Offset, int Stored, int StoredBefore, long[] Bases);

    /// <summary>
    /// The chunks of the newer version at the old chunk's place: its offset moved by the shift of the nearest
    /// chunk both versions hold (an insertion or deletion before it moves everything after), widened by a little
    /// slack; at most <see cref="PackFormat.MaxBases"/> chunks and <see cref="PackFormat.MaxPrefixLength"/> bytes.
    /// </summary>
    private static long[] Candidates(List<Extent> old, int k, List<Extent> newer, long[] shifts)
    {
        var from = old[k].Offset + shifts[k] - Slack;
        var to = old[k].Offset + shifts[k] + old[k].Length + Slack;
        var picked = new List<long>();
        long bytes = 0;
        // Extents are in offset order: start at the first one that ends after `from`.
        int lo = 0, hi = newer.Count;
        while (lo < hi)
        {
            var mid = (lo + hi) / 2;
            if (newer[mid].Offset + newer[mid].Length <= from)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        for (var i = lo; i < newer.Count && newer[i].Offset < to; i++)
        {
            if (picked.Contains(newer[i].BlobRowId))
            {
                continue;
            }

            if (picked.Count == PackFormat.MaxBases || bytes + newer[i].Length > PackFormat.MaxPrefixLength)
            {
                break;
            }

            picked.Add(newer[i].BlobRowId);
            bytes += newer[i].Length;
        }

        if (picked.Count == 0 && newer.Count > 0)
        {
            picked.Add(newer[^1].BlobRowId); // the file shrank below this chunk: its tail is the best guess
        }

        return [.. picked];
    }

    /// <summary>
    /// For each old extent, how far its bytes moved in the newer version: the shift of the nearest extent both
    /// versions hold (the preceding one on a tie), 0 when they share none. Two passes, so a version pair costs
    /// linear time however few chunks it shares.
    /// </summary>
    private static long[] Shifts(List<Extent> old, List<Extent> newer)
    {
        var newerAt = new Dictionary<long, long>();
        foreach (var e in newer)
        {
            newerAt.TryAdd(e.BlobRowId, e.Offset);
        }

        var shifts = new long[old.Count];
        var distance = new int[old.Count];
        int? last = null;
        long lastShift = 0;
        for (var k = 0; k < old.Count; k++)
        {
            distance[k] = last is { } l ? k - l : int.MaxValue;
            shifts[k] = lastShift;
            if (newerAt.TryGetValue(old[k].BlobRowId, out var at))
            {
                last = k;
                lastShift = at - old[k].Offset;
            }
        }

        last = null;
        for (var k = old.Count - 1; k >= 0; k--)
        {
            if (last is { } l && l - k < distance[k])
            {
                distance[k] = l - k;
                shifts[k] = lastShift;
            }

            if (newerAt.TryGetValue(old[k].BlobRowId, out var at))
            {
                last = k;
                lastShift = at - old[k].Offset;
            }
        }

        return shifts;
    }

    /// <summary>
    /// What each file version's rebuild decodes (its blobs' closures: <see cref="RebuildCost"/>) and, per blob row,
    /// the versions whose rebuild decodes it. Kept up to date as deltas are made: making a row a delta adds its
    /// bases' closures to every version that decodes the row. A version's rows are a sorted array (a write storm's
    /// file has thousands of versions of hundreds of chunks each: a set per version, kept for the whole pass, was
    /// most of the pass's CPU and of its garbage collections).
    /// </summary>
    private void LoadRebuilds(PathHistories histories)
    {
        var closures = new Dictionary<long, HashSet<long>>();
        var rows = new HashSet<long>();
        foreach (var v in histories.ByPath.Values.SelectMany(list => list))
        {
            if (v is not { Kind: EntryKind.File, Pruned: false, Extents: { } map } || !ExtentMap.TryDecode(map, v.Size, out var extents))
            {
                continue;
            }

            rows.Clear();
            foreach (var e in extents)
            {
                if (!_bases.ContainsKey(e.BlobRowId))
                {
                    rows.Add(e.BlobRowId);
                }
                else
                {
                    if (!closures.TryGetValue(e.BlobRowId, out var closure))
                    {
                        closures[e.BlobRowId] = closure = RebuildCost.Closure(e.BlobRowId, _bases);
                    }

                    rows.UnionWith(closure);
                }
            }

            var sorted = rows.ToArray();
            Array.Sort(sorted);
            var rebuild = new Rebuild(sorted, sorted.Sum(r => (long)Raw(r)), RebuildCost.Budget(_rebuildBound, v.Size));
            foreach (var row in sorted)
            {
                if (!_decodedBy.TryGetValue(row, out var list))
                {
                    _decodedBy[row] = list = [];
                }

                list.Add(rebuild);
            }
        }
    }

    /// <summary>
    /// The candidates (fewest dropped, most costly first) with which every version whose rebuild decodes
    /// <paramref name="row"/> still decodes within the rebuild bound once the row is a delta against them.
    /// </summary>
    private long[] WithinRebuildBound(long row, List<long> candidates)
    {
        if (candidates.Count == 0)
        {
            return [];
        }

        var affected = _decodedBy.TryGetValue(row, out var list) ? list : [];
        var closures = candidates.ToDictionary(c => c, c => RebuildCost.Closure(c, _bases));
        while (candidates.Count > 0)
        {
            var added = new HashSet<long>();
            foreach (var c in candidates)
            {
                added.UnionWith(closures[c]);
            }

            if (affected.All(v => v.Bytes + added.Where(a => !v.Decodes(a)).Sum(a => (long)Raw(a)) <= v.Budget))
            {
                return [.. candidates];
            }

            candidates.Remove(candidates.MaxBy(c => Bytes(closures[c]))!);
        }

        return [];
    }

    /// <summary>Counts the closures of <paramref name="bases"/> into every version that decodes <paramref name="row"/>.</summary>
    private void AddToRebuilds(long row, long[] bases)
    {
        if (!_decodedBy.TryGetValue(row, out var affected))
        {
            return;
        }

        var added = new HashSet<long>();
        foreach (var b in bases)
        {
            added.UnionWith(RebuildCost.Closure(b, _bases));
        }

        foreach (var v in affected.ToList())
        {
            foreach (var a in added)
            {
                if (v.Add(a))
                {
                    v.Bytes += Raw(a);
                    if (!_decodedBy.TryGetValue(a, out var list))
                    {
                        _decodedBy[a] = list = [];
                    }

                    list.Add(v);
                }
            }
        }
    }

    private long Bytes(HashSet<long> rows) => rows.Sum(r => (long)Raw(r));

    private int Raw(long row) => _rows.TryGetValue(row, out var r) ? r.Raw : 0;

    /// <summary>One version's rebuild: the blob rows it decodes, their bytes, and what the bound allows it.</summary>
    private sealed class Rebuild(long[] sorted, long bytes, double budget)
    {
        private HashSet<long>? _added;

        public long Bytes { get; set; } = bytes;

        /// <summary>Whether the rebuild decodes <paramref name="row"/>.</summary>
        public bool Decodes(long row) => Array.BinarySearch(sorted, row) >= 0 || (_added?.Contains(row) ?? false);

        /// <summary>Adds a row the rebuild decodes from now on; false if it did already.</summary>
        public bool Add(long row) => !Decodes(row) && (_added ??= []).Add(row);

        public double Budget { get; } = budget;
    }

    private void SetBases(long row, long[] bases)
    {
        _bases[row] = bases;
        foreach (var b in bases)
        {
            if (!_dependents.TryGetValue(b, out var list))
            {
                _dependents[b] = list = [];
            }

            list.Add(row);
        }
    }

    /// <summary>Deltas on the longest chain from <paramref name="row"/> down to a whole blob.</summary>
    private int Depth(long row) => Longest(row, _bases, []);

    /// <summary>Deltas on the longest chain of blobs that decode through <paramref name="row"/>.</summary>
    private int Height(long row) => Longest(row, _dependents, []);

    // Memoized: bases fan out (up to four per delta), so a plain recursion over a long chain would be exponential.
    private static int Longest<T>(long row, Dictionary<long, T> edges, Dictionary<long, int> memo)
        where T : IEnumerable<long>
    {
        if (memo.TryGetValue(row, out var known))
        {
            return known;
        }

        memo[row] = PackFormat.MaxDepth; // a cycle (only in a damaged catalog) reads as too deep
        var longest = 0;
        if (edges.TryGetValue(row, out var next))
        {
            foreach (var n in next)
            {
                longest = Math.Max(longest, 1 + Longest(n, edges, memo));
            }
        }

        memo[row] = Math.Min(longest, PackFormat.MaxDepth);
        return memo[row];
    }

    /// <summary>Whether decoding <paramref name="row"/> needs <paramref name="target"/> (so basing target on row would make a cycle).</summary>
    private bool DependsOn(long row, long target)
    {
        var seen = new HashSet<long>();
        var stack = new Stack<long>([row]);
        while (stack.TryPop(out var r))
        {
            if (r == target)
            {
                return true;
            }

            if (seen.Add(r) && _bases.TryGetValue(r, out var bases))
            {
                foreach (var b in bases)
                {
                    stack.Push(b);
                }
            }
        }

        return false;
    }
}
