using DiffKeeper.Storage.Chunking;

namespace DiffKeeper.Storage;

/// <summary>
/// Builds one file's stored content: its data is cut into FastCDC chunks (each data range on its own, the gaps
/// between them holes), each chunk is stored once through the writer, and <see cref="Finish"/> gives the extent map
/// and content id. The one place content is cut and stored: a file read (<see cref="FileIngest"/>) and the recorder's
/// followed copy of a file (payload events) make the same chunks and blobs from the same bytes.
/// Chunks must be added in file order, each after the previous one's end.
/// </summary>
public sealed class ChunkedContent
{
    private readonly TraceWriter _writer;
    private long _storedBefore;
    private readonly List<(Extent Extent, BlobId Id)> _chunks = [];

    // What one Store or StoreRange works with, kept for the next (a content used again through Restart makes none).
    private readonly List<(int Offset, int Length)> _batch = [];
    private readonly List<(long RowId, BlobId Id, int Length)> _stored = [];
    private BlobId[] _ids = [];

    /// <param name="previous">The extent map of the path's version this content replaces, asked at most once and
    /// only when a chunk is new (<see cref="TraceWriter.TryDelta"/>); null: none.</param>
    public ChunkedContent(TraceWriter writer, Func<byte[]?>? previous = null)
    {
        _writer = writer;
        _storedBefore = writer.StoredBytesWritten;
        if (previous is not null)
        {
            var asked = false;
            byte[]? map = null;
            Previous = () =>
            {
                if (!asked)
                {
                    asked = true;
                    map = previous();
                }

                return map;
            };
        }
    }

    /// <summary>
    /// Empties this content to build another file's through the same writer, as a new <c>ChunkedContent(writer)</c>
    /// would, keeping its lists: the recorder stores a followed copy's state at nearly every write, and a content with
    /// its lists per state was ~15 objects a version. Not for a content made with a previous version's map.
    /// </summary>
    public void Restart()
    {
        if (Previous is not null)
        {
            throw new InvalidOperationException("a content that asks for the previous version's map is used once");
        }

        _chunks.Clear();
        _storedBefore = _writer.StoredBytesWritten;
    }

    /// <summary>The previous version's extent map, asked once (null when the caller gave none).</summary>
    internal Func<byte[]?>? Previous { get; }

    /// <summary>The chunks so far, in file order, with their blob ids (a caller may keep them to reuse next time).</summary>
    public IReadOnlyList<(Extent Extent, BlobId Id)> Chunks => _chunks;

    /// <summary>Where the last chunk ends (0 when there is none).</summary>
    public long End => _chunks.Count == 0 ? 0 : _chunks[^1].Extent.Offset + _chunks[^1].Extent.Length;

    /// <summary>Adds a chunk already stored (its row <paramref name="rowId"/>), without cutting or hashing it again.</summary>
    public void Add(long offset, int length, long rowId, BlobId id)
    {
        _chunks.Add((new Extent(offset, length, rowId), id));
    }

    /// <summary>
    /// Cuts chunks of <paramref name="buffer"/> from <paramref name="consumed"/> into <paramref name="batch"/> while a
    /// maximal chunk (or, with <paramref name="eof"/>, the end of the data) is in it, so cut points never depend on
    /// how the data was read. Returns where the uncut rest starts.
    /// </summary>
    public static int Cut(ReadOnlySpan<byte> buffer, int consumed, int filled, bool eof, List<(int Offset, int Length)> batch)
    {
        while (consumed < filled && (eof || filled - consumed >= FastCdc.MaxSize))
        {
            var cut = FastCdc.NextCut(buffer[consumed..filled]);
            batch.Add((consumed, cut));
            consumed += cut;
        }

        return consumed;
    }

    /// <summary>
    /// Stores a batch of chunks of <paramref name="buffer"/> already hashed into <paramref name="ids"/> (encoding the new
    /// ones on every core when <paramref name="parallel"/>), the first of them at file offset <paramref name="offset"/>;
    /// <paramref name="endsRange"/> when its last chunk ends a data range (<see cref="FileIngest.StoreBatch"/>).
    /// Returns the file offset after the batch.
    /// </summary>
    public long Store(ReadOnlyMemory<byte> buffer, List<(int Offset, int Length)> batch, BlobId[] ids, bool parallel, long offset, bool endsRange = false)
    {
        FileIngest.StoreBatch(_writer, buffer, batch, ids, parallel, _stored, endsRange, previous: Previous);
        foreach (var (rowId, id, length) in _stored)
        {
            Add(offset, length, rowId, id);
            offset += length;
        }

        _stored.Clear();
        return offset;
    }

    /// <summary>
    /// Cuts, hashes and stores <paramref name="buffer"/>[<paramref name="start"/>..<paramref name="end"/>], a whole
    /// data range of the file (its end is the end of the data) at file offset <paramref name="start"/>. For the next
    /// state of a file whose last chunk, stored before, ended where its data did (<paramref name="tail"/>; the caller
    /// vouches that its bytes are unchanged; <see cref="GrowingTail.None"/> otherwise): when the range's first chunk
    /// starts where that one did, its cut search resumes where the old chunk ended and its hash continues
    /// the old chunk's state over the new bytes only. Leaves in <paramref name="tail"/> the state of the range's last
    /// chunk. Returns the bytes of the range re-cut, as without the tail: the recorder's budget of exact versions per
    /// window counts them (counting only the new bytes let a file appended 16 bytes at a time make 39,257 exact
    /// versions of 1,000,000 writes instead of 6,735, and a catalog of 42 MB instead of 10).
    /// </summary>
    public long StoreRange(ReadOnlyMemory<byte> buffer, int start, int end, ref GrowingTail tail)
    {
        var batch = _batch;
        batch.Clear();
        var resume = tail.Start == start && tail.HashedTo > start && tail.HashedTo <= end;
        var consumed = start;
        if (resume)
        {
            var cut = FastCdc.NextCut(buffer.Span.Slice(start, end - start), (int)(tail.HashedTo - start));
            batch.Add((start, cut));
            consumed = start + cut;
        }

        Cut(buffer.Span, consumed, end, eof: true, batch);
        if (_ids.Length < batch.Count)
        {
            _ids = new BlobId[Math.Max(batch.Count, 2 * _ids.Length)];
        }

        var ids = _ids; // StoreBatch reads the first batch.Count
        var next = GrowingTail.None;
        for (var i = 0; i < batch.Count; i++)
        {
            // The first chunk continues the old one's state over the bytes past it; every other starts afresh.
            var (offset, length) = batch[i];
            var (hasher, from) = resume && i == 0 ? (tail.Hasher, (int)tail.HashedTo) : (new Codecs.Sha256.Hasher(), offset);
            hasher.Append(buffer.Span.Slice(from, offset + length - from));
            if (i == batch.Count - 1)
            {
                next = new GrowingTail(offset, offset + length, hasher); // a copy: the state before Finish's padding
            }

            var digest = new byte[Codecs.Sha256.HashSize];
            hasher.Finish(digest);
            ids[i] = new BlobId(digest);
        }

        tail = next;
        Store(buffer, batch, ids, parallel: false, start, endsRange: true);
        Array.Clear(ids, 0, batch.Count); // no id kept alive by the scratch
        batch.Clear();
        return end - start;
    }

    /// <summary>
    /// Stores <paramref name="buffer"/>[0..<paramref name="length"/>], a file's only data range, shorter than
    /// <see cref="FastCdc.MinSize"/> (so one chunk): what <c>new ChunkedContent(writer)</c>, <see cref="StoreRange"/>
    /// of the range and <see cref="Finish"/> give (the same chunk, row and content), without their lists and arrays,
    /// which were most of the objects a small file's version made. <paramref name="chunk"/> is the one chunk.
    /// <paramref name="tail"/> as in <see cref="StoreRange"/>: when it is a state of these bytes from 0 (the caller
    /// vouches that they are unchanged up to its end), only the bytes past it are hashed; it is left as the state of
    /// all <paramref name="length"/> bytes, so a next state of a file growing by appends, small or not, hashes only its
    /// new bytes too (tar writes 10 KiB at a time: a file's first 10 KiB were hashed again by its second state, ~27 MB
    /// of an untar's 158 MB hashed on the recorder's thread).
    /// </summary>
    public static IngestedContent StoreWhole(TraceWriter writer, ReadOnlySpan<byte> buffer, int length, ref GrowingTail tail, out (Extent Extent, BlobId Id) chunk)
    {
        if (length <= 0 || length >= FastCdc.MinSize)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "one chunk of 1 byte up to the least chunk size");
        }

        var before = writer.StoredBytesWritten;
        var (hasher, from) = tail.Start == 0 && tail.HashedTo > 0 && tail.HashedTo <= length
            ? (tail.Hasher, (int)tail.HashedTo)
            : (new Codecs.Sha256.Hasher(), 0);
        hasher.Append(buffer[from..length]);
        tail = new GrowingTail(0, length, hasher); // a copy: the state before Finish's padding
        var digest = new byte[Codecs.Sha256.HashSize];
        hasher.Finish(digest);
        var id = new BlobId(digest);
        var row = writer.PutBlob(buffer[..length], id);
        chunk = (new Extent(0, length, row), id);
        return new(ExtentMap.Encode(chunk.Extent), ExtentMap.ContentId(0, length, id, length), length, writer.StoredBytesWritten - before);
    }

    /// <summary>The content of a file of <paramref name="size"/> bytes made of the chunks added (the rest holes).</summary>
    public IngestedContent Finish(long size)
    {
        if (_chunks.Count == 1)
        {
            // A small file (every read of one): no lists.
            var (extent, id) = _chunks[0];
            return new(ExtentMap.Encode(extent), ExtentMap.ContentId(extent.Offset, extent.Length, id, size), size,
                _writer.StoredBytesWritten - _storedBefore);
        }

        var chunks = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_chunks);
        return new(ExtentMap.EncodeChunks(chunks), ExtentMap.ContentIdOfChunks(chunks, size), size, _writer.StoredBytesWritten - _storedBefore);
    }
}

/// <summary>
/// The SHA-256 state of a file's last stored chunk that ended where the file's data did, over its bytes
/// [<see cref="Start"/>, <see cref="HashedTo"/>): what the next state of a file growing by appends continues
/// instead of hashing its tail again (tar writes 10 KiB at a time: each state hashed up to 256 KiB of tail anew,
/// ~220 MB hashed for an untar's 130 MB). <see cref="ChunkedContent.StoreRange(ReadOnlyMemory{byte}, int, int, ref GrowingTail)"/>.
/// </summary>
public readonly struct GrowingTail
{
    internal GrowingTail(long start, long hashedTo, Codecs.Sha256.Hasher hasher)
    {
        Start = start;
        HashedTo = hashedTo;
        Hasher = hasher;
    }

    public static GrowingTail None => new(-1, -1, default);

    /// <summary>The chunk's file offset; -1: none.</summary>
    public long Start { get; }

    public long HashedTo { get; }

    internal Codecs.Sha256.Hasher Hasher { get; }
}
