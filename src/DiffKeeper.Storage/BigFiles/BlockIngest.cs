using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// Stores a big file as a block extent map (docs/store-format.md, "Big files"): only data extents are read
/// (SEEK_DATA/SEEK_HOLE), cut on the aligned 64 KiB grid, hashed on every core, and only pieces that differ from
/// the previous version's piece at the same offset (or from every blob in the trace) are stored. Every read is
/// positioned (pread); the descriptor's own offset, which SEEK_DATA moves, is never used to read. A piece whose
/// <see cref="BlockFingerprint"/> (under <c>seed</c>) equals the previous piece's at its offset takes that piece's blob
/// without SHA-256 (docs/store-format.md, "Block fingerprints"), unless <c>trustFingerprints</c> is false.
/// </summary>
public static class BlockIngest
{
    private const int B = BlockPiece.BlockSize;
    private const int BatchBytes = 4 << 20;

    /// <summary>
    /// Stores <paramref name="file"/> (<paramref name="size"/> bytes). With <paramref name="previous"/> (the path's
    /// last block map, of <paramref name="previousSize"/> bytes) and <paramref name="written"/> (every byte range
    /// written since it), only the blocks those ranges touch are read and the previous pieces of every other block
    /// are kept unread; without <paramref name="written"/>, every data extent is read and compared by hash.
    /// </summary>
    public static BlockIngestResult IngestFile(TraceWriter writer, SafeFileHandle file, long size,
        IReadOnlyList<BlockPiece>? previous = null, long previousSize = 0, IReadOnlyList<(long Start, long End)>? written = null,
        long? seed = null, bool trustFingerprints = true) =>
        Ingest(writer, new FileBlockSource(file), size, previous, previousSize, written, seed, trustFingerprints);

    /// <summary>As <see cref="IngestFile"/>, reading <paramref name="file"/>: an open file or an image taken of one earlier.</summary>
    public static BlockIngestResult Ingest(TraceWriter writer, IBlockSource file, long size,
        IReadOnlyList<BlockPiece>? previous = null, long previousSize = 0, IReadOnlyList<(long Start, long End)>? written = null,
        long? seed = null, bool trustFingerprints = true)
    {
        var storedBefore = writer.StoredBytesWritten;
        var partial = previous is not null && written is not null && IsBlockMap(previous);
        var regions = partial ? WrittenRegions(written!, size, previousSize) : [(0L, size)];
        using var batch = new PieceBatch(writer, previous, seed ?? BlockFingerprint.ProcessSeed, trustFingerprints);
        foreach (var (a, b) in regions)
        {
            foreach (var (s, e) in file.DataRanges(a, b))
            {
                batch.ReadFrom(file, s, e);
            }
        }

        var pieces = batch.Finish();
        if (batch.EndedAt is { } eof)
        {
            size = eof; // it shrank while being read: what the reads returned, the next event brings the rest
        }
        if (partial)
        {
            pieces = Kept(previous!, regions, size, pieces);
        }

        pieces.RemoveAll(p => p.End > size);
        return Result(writer, pieces, size, storedBefore, batch);
    }

    /// <summary>
    /// Merges a diff snapshot onto its parent, as Firecracker's diff snapshots are merged: <paramref name="diff"/>
    /// is a sparse file whose data extents are the changed bytes and whose holes mean "as in the parent". The result
    /// is a complete version: the parent's pieces of untouched blocks kept, and each touched block rebuilt from the
    /// parent's bytes (read from the trace by <paramref name="reader"/>) with the diff's data laid over them, its
    /// data runs being the union of both (so the parent's holes stay holes where the diff has none).
    /// </summary>
    public static BlockIngestResult MergeDiff(TraceWriter writer, TraceReader reader, SafeFileHandle diff, long size,
        IReadOnlyList<BlockPiece> parent, long parentSize, long? seed = null, bool trustFingerprints = true)
    {
        var storedBefore = writer.StoredBytesWritten;
        var diffRanges = DataRanges(diff, 0, size);
        var regions = IsBlockMap(parent)
            ? BlockRegions(diffRanges.Append((Math.Min(size, parentSize), Math.Max(size, parentSize))), size)
            : [(0L, size)];
        using var batch = new PieceBatch(writer, parent, seed ?? BlockFingerprint.ProcessSeed, trustFingerprints);
        int pi = 0, di = 0;
        var runs = new List<(long Start, long End)>();
        var theirs = new List<(long Start, long End)>();
        foreach (var (a, b) in regions)
        {
            for (var bs = a; bs < b; bs += B)
            {
                var be = Math.Min(bs + B, b);
                var at = batch.Reserve((int)(be - bs));
                var block = batch.Slot(at, (int)(be - bs));
                block.Clear();
                runs.Clear();
                theirs.Clear();
                while (pi < parent.Count && parent[pi].End <= bs)
                {
                    pi++;
                }

                for (var i = pi; i < parent.Count && parent[i].Offset < be; i++)
                {
                    var p = parent[i];
                    var loc = reader.Blob(p.RowId);
                    if (p.Offset >= bs && p.End <= be)
                    {
                        reader.Blobs.Read(loc, block.Slice((int)(p.Offset - bs), p.Length));
                    }
                    else
                    {
                        // A piece across blocks: a parent stored before it was a block map.
                        var whole = new byte[p.Length];
                        reader.Blobs.Read(loc, whole);
                        var s = Math.Max(p.Offset, bs);
                        var e = Math.Min(p.End, be);
                        whole.AsSpan((int)(s - p.Offset), (int)(e - s)).CopyTo(block[(int)(s - bs)..]);
                    }

                    theirs.Add((Math.Max(p.Offset, bs), Math.Min(p.End, be)));
                }

                while (di < diffRanges.Count && diffRanges[di].End <= bs)
                {
                    di++;
                }

                var mine = new List<(long Start, long End)>();
                for (var i = di; i < diffRanges.Count && diffRanges[i].Start < be; i++)
                {
                    var s = Math.Max(diffRanges[i].Start, bs);
                    var e = Math.Min(diffRanges[i].End, be);
                    var n = Packs.PackReader.ReadFully(diff, block.Slice((int)(s - bs), (int)(e - s)), s);
                    if (n > 0)
                    {
                        mine.Add((s, s + n));
                    }
                }

                Union(theirs, mine, runs);
                foreach (var (s, e) in runs)
                {
                    batch.Add(at + (int)(s - bs), s, (int)(e - s));
                }

                batch.Commit((int)(be - bs));
            }
        }

        var pieces = Kept(parent, regions, size, batch.Finish());
        pieces.RemoveAll(p => p.End > size);
        return Result(writer, pieces, size, storedBefore, batch);
    }

    /// <summary>
    /// The block map of a file version written to the trace (a block map or any extent map), with each blob's id,
    /// read from the catalog in one range scan (a point lookup per piece would cost more than hashing them).
    /// </summary>
    public static List<BlockPiece> Load(TraceWriter writer, byte[] extentMap, long size)
    {
        if (!ExtentMap.TryDecode(extentMap, size, out var extents))
        {
            throw new InvalidDataException("the previous version's extent map is malformed");
        }

        var pieces = new List<BlockPiece>(extents.Count);
        if (extents.Count == 0)
        {
            return pieces;
        }

        var ids = new Dictionary<long, BlobId>(extents.Count);
        var wanted = extents.Select(e => e.BlobRowId).ToHashSet();
        using (var scan = writer.Database.Prepare("SELECT id, hash FROM blobs WHERE id BETWEEN ?1 AND ?2"))
        {
            scan.Bind(1, wanted.Min()).Bind(2, wanted.Max());
            while (scan.Step())
            {
                var row = scan.Int64(0);
                if (wanted.Contains(row) && scan.BlobOrNull(1) is { Length: 32 } hash)
                {
                    ids[row] = new BlobId(hash);
                }
            }
        }

        foreach (var e in extents)
        {
            if (!ids.TryGetValue(e.BlobRowId, out var id))
            {
                throw new BlobMissingException(e.BlobRowId);
            }

            pieces.Add(new BlockPiece(e.Offset, e.Length, e.BlobRowId, id));
        }

        return pieces;
    }

    /// <summary>Whether every piece lies inside one aligned block (a block map, rather than FastCDC chunks).</summary>
    public static bool IsBlockMap(IReadOnlyList<BlockPiece> pieces)
    {
        foreach (var p in pieces)
        {
            if (p.Offset / B != (p.End - 1) / B)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// The data extents of [<paramref name="from"/>, <paramref name="to"/>), in order (all of it where SEEK_DATA is
    /// unsupported): what SEEK_DATA/SEEK_HOLE report. Asked of FIEMAP first, which names hundreds of extents per call
    /// where SEEK_DATA and SEEK_HOLE cost two calls each (a sparse image has thousands); allocated but unwritten
    /// extents, which SEEK_DATA counts as data only where the page cache holds their pages, are asked of
    /// SEEK_DATA/SEEK_HOLE themselves, and so is everything on a file system without FIEMAP.
    /// </summary>
    public static List<(long Start, long End)> DataRanges(SafeFileHandle file, long from, long to)
    {
        if (to <= from)
        {
            return [];
        }

        return FiemapRanges(file, from, to) ?? SeekRanges(file, from, to);
    }

    private const int FiemapBatch = 1024;

    /// <summary>The data extents by FIEMAP; null where the file system has none.</summary>
    private static List<(long Start, long End)>? FiemapRanges(SafeFileHandle file, long from, long to)
    {
        var fd = (int)file.DangerousGetHandle();
        var buffer = ArrayPool<byte>.Shared.Rent(Libc.FiemapHeaderSize + FiemapBatch * Libc.FiemapExtentSize);
        try
        {
            var ranges = new List<(long Start, long End)>();
            var pos = from;
            while (pos < to)
            {
                var header = buffer.AsSpan(0, Libc.FiemapHeaderSize);
                header.Clear();
                BinaryPrimitives.WriteUInt64LittleEndian(header, (ulong)pos);
                BinaryPrimitives.WriteUInt64LittleEndian(header[8..], (ulong)(to - pos));
                BinaryPrimitives.WriteUInt32LittleEndian(header[24..], FiemapBatch);
                if (Libc.Fiemap(fd, buffer) != 0)
                {
                    return null;
                }

                var mapped = (int)BinaryPrimitives.ReadUInt32LittleEndian(header[20..]);
                if (mapped == 0)
                {
                    break;
                }

                var last = false;
                for (var i = 0; i < mapped; i++)
                {
                    var x = buffer.AsSpan(Libc.FiemapHeaderSize + i * Libc.FiemapExtentSize, Libc.FiemapExtentSize);
                    var logical = (long)BinaryPrimitives.ReadUInt64LittleEndian(x);
                    var length = (long)BinaryPrimitives.ReadUInt64LittleEndian(x[16..]);
                    var flags = BinaryPrimitives.ReadUInt32LittleEndian(x[40..]);
                    last |= (flags & Libc.FIEMAP_EXTENT_LAST) != 0;
                    var s = Math.Max(logical, from);
                    var e = Math.Min(logical + length, to);
                    pos = Math.Max(pos, logical + length);
                    if (e <= s)
                    {
                        continue;
                    }

                    if ((flags & Libc.FIEMAP_EXTENT_UNWRITTEN) != 0)
                    {
                        foreach (var r in SeekRanges(file, s, e))
                        {
                            Append(ranges, r.Start, r.End);
                        }
                    }
                    else
                    {
                        Append(ranges, s, e);
                    }
                }

                if (last)
                {
                    break;
                }
            }

            return ranges;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void Append(List<(long Start, long End)> ranges, long s, long e)
    {
        if (ranges.Count > 0 && ranges[^1].End >= s)
        {
            ranges[^1] = (ranges[^1].Start, Math.Max(ranges[^1].End, e)); // physically apart, logically one run
        }
        else
        {
            ranges.Add((s, e));
        }
    }

    private static List<(long Start, long End)> SeekRanges(SafeFileHandle file, long from, long to)
    {
        var ranges = new List<(long Start, long End)>();
        var fd = (int)file.DangerousGetHandle();
        var pos = from;
        while (pos < to)
        {
            var start = Libc.Lseek(fd, pos, Libc.SEEK_DATA);
            if (start < 0)
            {
                if (Marshal.GetLastPInvokeError() != Libc.ENXIO)
                {
                    ranges.Add((pos, to));
                }

                break; // ENXIO: only a hole remains
            }

            if (start >= to)
            {
                break;
            }

            var end = Libc.Lseek(fd, start, Libc.SEEK_HOLE);
            if (end < 0 || end > to)
            {
                end = to;
            }

            ranges.Add((start, end));
            pos = end;
        }

        return ranges;
    }

    /// <summary>
    /// The blocks a partial ingest reads: those <paramref name="written"/> touches, and those between the previous
    /// and the new size (grown or cut), as whole blocks clipped to <paramref name="size"/>, sorted and merged.
    /// </summary>
    public static List<(long Start, long End)> WrittenRegions(IEnumerable<(long Start, long End)> written, long size, long previousSize) =>
        BlockRegions(written.Append((Math.Min(size, previousSize), Math.Max(size, previousSize))), size);

    /// <summary>The ranges widened to whole blocks, clipped to the file, sorted and merged.</summary>
    private static List<(long Start, long End)> BlockRegions(IEnumerable<(long Start, long End)> ranges, long size)
    {
        var blocks = ranges.Where(r => r.End > r.Start)
            .Select(r => (Start: r.Start / B * B, End: Math.Min((r.End + B - 1) / B * B, size)))
            .Where(r => r.End > r.Start)
            .OrderBy(r => r.Start)
            .ToList();
        var merged = new List<(long Start, long End)>();
        foreach (var r in blocks)
        {
            if (merged.Count > 0 && r.Start <= merged[^1].End)
            {
                merged[^1] = (merged[^1].Start, Math.Max(merged[^1].End, r.End));
            }
            else
            {
                merged.Add(r);
            }
        }

        return merged;
    }

    /// <summary>The previous pieces outside <paramref name="regions"/> (whole blocks) and within the size, with the fresh ones, in order.</summary>
    private static List<BlockPiece> Kept(IReadOnlyList<BlockPiece> previous, List<(long Start, long End)> regions, long size, List<BlockPiece> fresh)
    {
        var result = new List<BlockPiece>(previous.Count + fresh.Count);
        var r = 0;
        foreach (var p in previous)
        {
            while (r < regions.Count && regions[r].End <= p.Offset)
            {
                r++;
            }

            var inside = r < regions.Count && regions[r].Start <= p.Offset;
            if (!inside && p.End <= size)
            {
                result.Add(p);
            }
        }

        result.AddRange(fresh);
        result.Sort((x, y) => x.Offset.CompareTo(y.Offset));
        return result;
    }

    private static void Union(List<(long Start, long End)> a, List<(long Start, long End)> b, List<(long Start, long End)> into)
    {
        foreach (var r in a.Concat(b).OrderBy(r => r.Start))
        {
            if (into.Count > 0 && r.Start <= into[^1].End)
            {
                into[^1] = (into[^1].Start, Math.Max(into[^1].End, r.End));
            }
            else
            {
                into.Add(r);
            }
        }
    }

    private static BlockIngestResult Result(TraceWriter writer, List<BlockPiece> pieces, long size, long storedBefore, PieceBatch batch)
    {
        var extents = new List<Extent>(pieces.Count);
        var contentId = new ExtentMap.ContentHasher(); // ExtentMap.ContentId's hash, without a list of tuples first
        foreach (var p in pieces)
        {
            extents.Add(new Extent(p.Offset, p.Length, p.RowId));
            contentId.Add(p.Offset, p.Length, p.Id);
        }

        var content = new IngestedContent(ExtentMap.Encode(extents), contentId.Finish(size), size, writer.StoredBytesWritten - storedBefore);
        return new BlockIngestResult(content, pieces, batch.BytesRead, batch.Changed) { PiecesByFingerprint = batch.ByFingerprint };
    }

    /// <summary>
    /// Pieces of up to 4 MiB of the file at a time (one pooled buffer per ingest, never per region), read, hashed and
    /// (the changed ones) compressed on every core, then stored in offset order.
    /// </summary>
    private sealed class PieceBatch(TraceWriter writer, IReadOnlyList<BlockPiece>? previous, long seed, bool trustFingerprints) : IDisposable
    {
        private readonly byte[] _buffer = ArrayPool<byte>.Shared.Rent(BatchBytes);
        private readonly List<(int At, long Offset, int Length)> _pending = [];
        private readonly List<IBlockSource?> _sources = []; // per pending piece: where to read it, or null (filled by the caller)
        private readonly List<BlockPiece> _result = [];
        private readonly bool _alignChanged = writer.AlignsNow;
        // The previous pieces in offset order, looked up by binary search: a dictionary of them was ~100 page faults
        // and a GC's worth of allocation per 4,096 pieces.
        private readonly IReadOnlyList<BlockPiece>? _previous = previous is null ? null : InOrder(previous);
        private int _filled;
        // Pieces read from a source are read into a per-thread block buffer; those to be stored are copied to the
        // start of _buffer, _packed bytes so far (never more than the batch's pieces, which _filled bounds). A batch
        // holds either such pieces or MergeDiff's, built in their own slots, never both. _at: where each piece's
        // bytes are for PieceStore.
        private int _packed;
        private int[] _at = [];

        public long BytesRead { get; private set; }

        private static IReadOnlyList<BlockPiece> InOrder(IReadOnlyList<BlockPiece> pieces)
        {
            for (var i = 1; i < pieces.Count; i++)
            {
                if (pieces[i].Offset <= pieces[i - 1].Offset)
                {
                    var sorted = pieces.ToList();
                    sorted.Sort((x, y) => x.Offset.CompareTo(y.Offset));
                    return sorted;
                }
            }

            return pieces;
        }

        /// <summary>The previous piece that starts at <paramref name="offset"/>, if any.</summary>
        private bool TryPrevious(long offset, out BlockPiece piece)
        {
            if (_previous is { } list)
            {
                int lo = 0, hi = list.Count - 1;
                while (lo <= hi)
                {
                    var mid = lo + ((hi - lo) >> 1);
                    var at = list[mid].Offset;
                    if (at == offset)
                    {
                        piece = list[mid];
                        return true;
                    }

                    if (at < offset)
                    {
                        lo = mid + 1;
                    }
                    else
                    {
                        hi = mid - 1;
                    }
                }
            }

            piece = default;
            return false;
        }

        public int Changed { get; private set; }

        public int ByFingerprint { get; private set; }

        /// <summary>Where the source ended before a read did (it shrank while being read); null while every read was whole.</summary>
        public long? EndedAt { get; private set; }

        /// <summary>
        /// Queues [start, end) as pieces of the grid; each is read and hashed on every core when the batch is full
        /// (<see cref="Flush"/>), so the copy out of the page cache is shared by the cores as the hashing is.
        /// </summary>
        public void ReadFrom(IBlockSource file, long start, long end)
        {
            var pos = start;
            while (pos < end && EndedAt is null)
            {
                var len = (int)(Math.Min((pos / B + 1) * B, end) - pos);
                if (_buffer.Length - _filled < len)
                {
                    Flush();
                    continue;
                }

                _pending.Add((_filled, pos, len));
                _sources.Add(file);
                _filled += len;
                pos += len;
            }
        }

        /// <summary>Room for <paramref name="length"/> bytes (flushing first if needed); <see cref="Commit"/> takes it.</summary>
        public int Reserve(int length)
        {
            if (_buffer.Length - _filled < length)
            {
                Flush();
            }

            return _filled;
        }

        public Span<byte> Slot(int at, int length) => _buffer.AsSpan(at, length);

        public void Add(int at, long offset, int length)
        {
            _pending.Add((at, offset, length));
            _sources.Add(null);
            BytesRead += length;
        }

        public void Commit(int length) => _filled += length;

        public List<BlockPiece> Finish()
        {
            Flush();
            return _result;
        }

        private void Flush()
        {
            if (_pending.Count > 0)
            {
                var ids = new BlobId[_pending.Count];
                var got = new int[_pending.Count];
                var fingerprints = new UInt128[_pending.Count];
                var reused = new bool[_pending.Count];
                var encoded = new FileIngest.Encoded[_pending.Count];
                _at = [.. _pending.Select(p => p.At)];
                _packed = 0;
                try
                {
                    try
                    {
                        var runs = Runs();
                        System.Threading.Tasks.Parallel.For(0, runs.Count, r => ReadRun(runs[r], ids, got, fingerprints, reused, encoded));
                    }
                    catch (AggregateException e)
                    {
                        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
                    }

                    Store(ids, got, fingerprints, reused, encoded);
                }
                finally
                {
                    foreach (var e in encoded)
                    {
                        if (e.Buffer is not null)
                        {
                            ArrayPool<byte>.Shared.Return(e.Buffer);
                        }
                    }
                }
            }

            _pending.Clear();
            _sources.Clear();
            _filled = 0;
        }

        // Up to this many bytes of adjacent pieces are read with one pread (W4: 1,024 reads of 256 KiB instead of 4,096
        // of 64 KiB; a syscall on this project's VM costs several µs), into a buffer that still fits the core's cache.
        // W4, 11 rounds alternating at load 6: CPU median 151 ms against 156 with 64 KiB runs; 1 MiB runs: 160 (148).
        private const int RunBytes = 4 * B;

        [ThreadStatic]
        private static byte[]? t_run;

        /// <summary>The pending pieces as runs read at once: adjacent pieces of one source, up to <see cref="RunBytes"/>.</summary>
        private List<(int First, int Count)> Runs()
        {
            var runs = new List<(int First, int Count)>(_pending.Count);
            for (var i = 0; i < _pending.Count; i++)
            {
                if (runs.Count > 0 && _sources[i] is { } source && ReferenceEquals(source, _sources[i - 1]))
                {
                    var (first, count) = runs[^1];
                    var start = _pending[first].Offset;
                    var prev = _pending[i - 1];
                    if (prev.Offset + prev.Length == _pending[i].Offset && _pending[i].Offset + _pending[i].Length - start <= RunBytes)
                    {
                        runs[^1] = (first, count + 1);
                        continue;
                    }
                }

                runs.Add((i, 1));
            }

            return runs;
        }

        /// <summary>One run of pending pieces, on any core: read with one pread (pieces from a source), then each piece hashed.</summary>
        private void ReadRun((int First, int Count) run, BlobId[] ids, int[] got, UInt128[] fingerprints, bool[] reused, FileIngest.Encoded[] encoded)
        {
            var (first, count) = run;
            if (_sources[first] is not { } source)
            {
                // MergeDiff's pieces are built in their slots
                got[first] = _pending[first].Length;
                ReadAndHash(first, _buffer.AsSpan(_pending[first].At, got[first]), placed: true, ids, fingerprints, reused, encoded);
                return;
            }

            // Read into this thread's own buffer, which stays in the core's cache from the copy to the hashes (a slot
            // of the batch's 4 MiB buffer is cold memory each time: twice the copy's cost here). A read that comes
            // back short (the source ended) gives each piece what lies before that end.
            var start = _pending[first].Offset;
            var last = _pending[first + count - 1];
            var buffer = t_run ??= new byte[RunBytes];
            var n = source.Read(buffer.AsSpan(0, (int)(last.Offset + last.Length - start)), start);
            for (var i = first; i < first + count; i++)
            {
                var at = (int)(_pending[i].Offset - start);
                got[i] = Math.Clamp(n - at, 0, _pending[i].Length);
                ReadAndHash(i, buffer.AsSpan(at, got[i]), placed: false, ids, fingerprints, reused, encoded);
            }
        }

        /// <summary>
        /// One pending piece, on any core, once its bytes are read (<see cref="ReadRun"/>): fingerprinted, SHA-256'd
        /// unless its fingerprint equals the previous piece's, and, when it differs from the previous piece and will be a
        /// blob of its own, compressed here too, so the changed blocks' zstd runs on every core beside the reads instead
        /// of on one after them.
        /// </summary>
        private void ReadAndHash(int i, ReadOnlySpan<byte> bytes, bool placed, BlobId[] ids, UInt128[] fingerprints, bool[] reused, FileIngest.Encoded[] encoded)
        {
            var offset = _pending[i].Offset;
            var old = default(BlockPiece);
            var hasOld = TryPrevious(offset, out old);
            var fingerprint = BlockFingerprint.Of(bytes, seed);
            fingerprints[i] = fingerprint;
            if (trustFingerprints && fingerprint != UInt128.Zero && hasOld && old.Length == bytes.Length && old.Fingerprint == fingerprint)
            {
                ids[i] = old.Id; // the same bytes as the previous piece here (docs/store-format.md, "Block fingerprints")
                reused[i] = true;
                return;
            }

            ids[i] = BlobId.Of(bytes);
            if (hasOld && old.Length == bytes.Length && old.Id == ids[i])
            {
                return;
            }

            if (bytes.Length >= PieceStore.GroupBelow)
            {
                // A changed block zstd shrinks by less than an eighth is stored raw, in an aligned group, so that a
                // materialization beside the parent clones it from the pack (docs/store-format.md, "Aligned groups").
                // Whether it does is judged on its first 16 KiB first: a block whose sample shrinks by less than an
                // eighth is not compressed whole (W4: 26 ms of zstd a version, its output thrown away).
                var align = hasOld && _alignChanged && bytes.Length == B;
                if (align && SampleIncompressible(bytes))
                {
                    encoded[i] = new FileIngest.Encoded(BlobCodec.Raw, bytes.Length, null, Align: true);
                }
                else
                {
                    encoded[i] = FileIngest.Encode(bytes); // wasted only when the store holds these bytes already elsewhere
                    if (align && encoded[i].Length > bytes.Length - (bytes.Length / 8))
                    {
                        encoded[i] = encoded[i] with { Codec = BlobCodec.Raw, Length = bytes.Length, Align = true };
                    }
                }

                if (placed || encoded[i].Codec != BlobCodec.Raw)
                {
                    return; // the store writes the encoding: the raw bytes are not read again
                }
            }

            if (!placed)
            {
                // A piece stored raw or grouped is stored from the batch's buffer, packed from its start in the order
                // pieces turn out new: a version that changed 5% of its blocks touches ~5% of the buffer, not all of
                // it (every first touch of a page is a fault, ~11 µs on this project's VM). A compressed piece is not
                // copied at all (W4: 13 MiB and ~250 faults a version).
                var to = Interlocked.Add(ref _packed, bytes.Length) - bytes.Length;
                _at[i] = to;
                bytes.CopyTo(_buffer.AsSpan(to));
            }
        }

        private const int Sample = 16 << 10;

        [ThreadStatic]
        private static byte[]? t_sample;

        /// <summary>Whether zstd shrinks the first <see cref="Sample"/> bytes of a block by less than an eighth.</summary>
        private static bool SampleIncompressible(ReadOnlySpan<byte> block)
        {
            var output = t_sample ??= new byte[Codecs.Zstd.CompressBound(Sample)];
            return Codecs.Zstd.Compress(block[..Sample], output) > Sample - (Sample / 8);
        }

        private void Store(BlobId[] ids, int[] got, UInt128[] fingerprints, bool[] reused, FileIngest.Encoded[] encoded)
        {
            for (var i = 0; i < _pending.Count; i++)
            {
                if (_sources[i] is not null)
                {
                    BytesRead += got[i];
                }

                if (got[i] < _pending[i].Length)
                {
                    // The source ended inside this piece: it and nothing after it (in file order) exists.
                    EndedAt = _pending[i].Offset + got[i];
                    var keep = got[i] > 0 ? i + 1 : i;
                    if (got[i] > 0)
                    {
                        _pending[i] = _pending[i] with { Length = got[i] };
                    }

                    _pending.RemoveRange(keep, _pending.Count - keep);
                    break;
                }
            }

            var fresh = new List<(int Offset, int Length)>();
            var freshIds = new List<BlobId>();
            var freshEncoded = new List<FileIngest.Encoded>();
            var isFresh = new bool[_pending.Count];
            for (var i = 0; i < _pending.Count; i++)
            {
                var (_, offset, length) = _pending[i];
                if (!TryPrevious(offset, out var old) || old.Length != length || old.Id != ids[i])
                {
                    isFresh[i] = true;
                    fresh.Add((_at[i], length));
                    freshIds.Add(ids[i]);
                    freshEncoded.Add(encoded[i]);
                }
            }

            var stored = PieceStore.Store(writer, _buffer, fresh, [.. freshIds], [.. freshEncoded]);
            Changed += stored.Count;
            for (int i = 0, f = 0; i < _pending.Count; i++)
            {
                var (_, offset, length) = _pending[i];
                if (isFresh[i])
                {
                    _result.Add(new BlockPiece(offset, length, stored[f].RowId, stored[f].Id) { Fingerprint = fingerprints[i] });
                    f++;
                }
                else
                {
                    _ = TryPrevious(offset, out var old);
                    _result.Add(old with { Fingerprint = fingerprints[i] });
                    ByFingerprint += reused[i] ? 1 : 0;
                }
            }
        }

        public void Dispose() => ArrayPool<byte>.Shared.Return(_buffer);
    }
}
