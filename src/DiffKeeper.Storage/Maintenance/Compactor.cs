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
/// restore needs decodes without a chain; a chunk stays whole too when the chain through it would exceed
/// <c>snapshotInterval - 1</c> deltas (a keyframe). New records go to a new pack, fsynced before the commit that
/// moves the rows; the old records become garbage for the repack step.
/// </summary>
public sealed class Compactor
{
    private const long CommitEvery = 64L << 20;
    private const int Slack = 4096;

    private readonly TraceWriter _writer;
    private readonly TraceReader _reader;
    private readonly BlobCodec _codec;
    private readonly int _maxDepth;
    private readonly Dictionary<long, long[]> _bases = [];
    private readonly Dictionary<long, List<long>> _dependents = [];
    private readonly Dictionary<long, (BlobCodec Codec, int Stored)> _rows = [];

    private Compactor(TraceWriter writer, TraceReader reader, BlobCodec codec, int snapshotInterval)
    {
        _writer = writer;
        _reader = reader;
        _codec = codec;
        _maxDepth = Math.Max(0, snapshotInterval - 1);
    }

    public static CompactionResult Run(TraceWriter writer, TraceReader reader, BlobCodec codec, int snapshotInterval, IProgress<string>? progress = null)
    {
        if (codec is not (BlobCodec.ZstdDelta or BlobCodec.BsDiff))
        {
            throw new ArgumentOutOfRangeException(nameof(codec), codec, "compaction needs a delta codec");
        }

        return new Compactor(writer, reader, codec, snapshotInterval).Run(progress);
    }

    private CompactionResult Run(IProgress<string>? progress)
    {
        foreach (var loc in _reader.AllBlobs())
        {
            _rows[loc.BlobRowId] = (loc.Codec, loc.StoredLength);
            if (loc.IsDelta)
            {
                SetBases(loc.BlobRowId, loc.Bases);
            }
        }

        var histories = PathHistories.Load(_reader);
        var heads = histories.HeadBlobs();
        var processed = new HashSet<long>();
        long examined = 0, encoded = 0, before = 0, after = 0, sinceCommit = 0;
        using var update = _writer.Database.Prepare("UPDATE blobs SET pack_id = ?2, offset = ?3, stored_len = ?4, codec = ?5, bases = ?6 WHERE id = ?1");
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
                    var row = old[k].BlobRowId;
                    if (newerRows.Contains(row) || heads.Contains(row) || !processed.Add(row) ||
                        !_rows.TryGetValue(row, out var current) || current.Codec is BlobCodec.ZstdDelta or BlobCodec.BsDiff)
                    {
                        continue;
                    }

                    examined++;
                    // Bases too deep for the snapshot interval are dropped (a base that is a keyframe or a shallow
                    // delta still serves); only when none is left does the chunk stay whole.
                    var height = Height(row);
                    var candidates = Candidates(old, k, newer, shifts)
                        .Where(c => !DependsOn(c, row) && 1 + Depth(c) + height <= _maxDepth).ToArray();
                    if (candidates.Length == 0)
                    {
                        continue;
                    }

                    var appended = Encode(row, candidates, current.Stored, update);
                    if (appended > 0)
                    {
                        encoded++;
                        before += PackFormat.RecordSize(current.Stored);
                        after += appended;
                        sinceCommit += appended;
                    }
                }

                if (sinceCommit >= CommitEvery)
                {
                    Commit();
                    sinceCommit = 0;
                }
            }

            if (++done % 1000 == 0)
            {
                progress?.Report($"compacting: {done} of {histories.ByPath.Count} paths");
            }
        }

        Commit();
        return new CompactionResult(examined, encoded, before, after);
    }

    private void Commit()
    {
        if (_writer.HasPending)
        {
            _writer.Commit();
        }
    }

    /// <summary>Appends the delta of <paramref name="row"/> when it is smaller than <paramref name="limit"/>; returns the record size or 0.</summary>
    private int Encode(long row, long[] bases, int limit, SqliteStatement update)
    {
        var loc = _reader.Blob(row);
        var baseLocs = bases.Select(_reader.Blob).ToArray();
        var total = baseLocs.Sum(b => b.RawLength);
        var raw = ArrayPool<byte>.Shared.Rent(Math.Max(1, loc.RawLength));
        var prefix = ArrayPool<byte>.Shared.Rent(Math.Max(1, total));
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
                return 0; // damaged data is verify's to report; never build on it
            }

            // Worth it only when it saves a quarter of the record: the whole record it replaces stays in its pack as
            // garbage until that pack is repacked, which a big pack is only once a tenth of it is garbage.
            var payload = DeltaCodec.Encode(_codec, prefix.AsSpan(0, total), raw.AsSpan(0, loc.RawLength), limit / 4 * 3);
            if (payload is null)
            {
                return 0;
            }

            var pack = _writer.Pack;
            var offset = pack.Append(loc.Id, _codec, loc.RawLength, payload, PackFormat.BaseDigest(baseLocs.Select(b => b.Id)));
            _writer.Begin();
            update.Bind(1, row).Bind(2, pack.PackId).Bind(3, offset).Bind(4, (long)payload.Length).Bind(5, (long)_codec)
                .Bind(6, PackFormat.EncodeBases(bases)).Run();
            _rows[row] = (_codec, payload.Length);
            SetBases(row, bases);
            return PackFormat.RecordSize(payload.Length);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(raw);
            ArrayPool<byte>.Shared.Return(prefix);
        }
    }

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
