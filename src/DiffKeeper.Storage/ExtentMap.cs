using System.Buffers.Binary;
using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage;

/// <summary>One run of a file's bytes: <see cref="Length"/> bytes at <see cref="Offset"/> are blob <see cref="BlobRowId"/>.</summary>
public readonly record struct Extent(long Offset, int Length, long BlobRowId);

/// <summary>
/// A file's content as ordered extents; gaps between them (and after the last, up to the size) are holes.
/// Encoding and content id: docs/store-format.md, "Extent map encoding".
/// </summary>
public static class ExtentMap
{
    /// <summary>
    /// Most extents one version's map may hold (4,194,304: 1 TiB of 256 KiB chunks, or 64 GiB of the smallest
    /// ones). A reader keeps 24 bytes per extent, so one version costs at most ~100 MiB whatever a trace claims.
    /// </summary>
    public const int MaxCount = 1 << 22;

    public static byte[] Encode(IReadOnlyList<Extent> extents)
    {
        var buffer = new byte[10 + extents.Count * 30];
        var pos = Varint.Write(buffer, (ulong)extents.Count);
        long end = 0;
        foreach (var e in extents)
        {
            pos += Varint.Write(buffer.AsSpan(pos), (ulong)(e.Offset - end));
            pos += Varint.Write(buffer.AsSpan(pos), (ulong)e.Length);
            pos += Varint.Write(buffer.AsSpan(pos), (ulong)e.BlobRowId);
            end = e.Offset + e.Length;
        }

        return buffer[..pos];
    }

    /// <summary>
    /// <see cref="Encode(IReadOnlyList{Extent})"/> of the extents of <paramref name="chunks"/> (a file's chunks with
    /// their ids, as <see cref="ChunkedContent"/> keeps them), without a list of the extents and with one array: the
    /// recorder encodes a map per version of a growing file.
    /// </summary>
    public static byte[] EncodeChunks(ReadOnlySpan<(Extent Extent, BlobId Id)> chunks)
    {
        var bound = 10 + (chunks.Length * 30);
        var rented = bound > 1024 ? System.Buffers.ArrayPool<byte>.Shared.Rent(bound) : null;
        try
        {
            Span<byte> buffer = rented is null ? stackalloc byte[1024] : rented;
            var pos = Varint.Write(buffer, (ulong)chunks.Length);
            long end = 0;
            foreach (var (e, _) in chunks)
            {
                pos += Varint.Write(buffer[pos..], (ulong)(e.Offset - end));
                pos += Varint.Write(buffer[pos..], (ulong)e.Length);
                pos += Varint.Write(buffer[pos..], (ulong)e.BlobRowId);
                end = e.Offset + e.Length;
            }

            return buffer[..pos].ToArray();
        }
        finally
        {
            if (rented is not null)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    /// <summary>The map of one extent: <see cref="Encode(IReadOnlyList{Extent})"/> of a list of it.</summary>
    public static byte[] Encode(Extent extent)
    {
        Span<byte> buffer = stackalloc byte[31];
        var pos = Varint.Write(buffer, 1UL);
        pos += Varint.Write(buffer[pos..], (ulong)extent.Offset);
        pos += Varint.Write(buffer[pos..], (ulong)extent.Length);
        pos += Varint.Write(buffer[pos..], (ulong)extent.BlobRowId);
        return buffer[..pos].ToArray();
    }

    /// <summary>Decodes an extent map; returns false when the bytes are not a well-formed map within <paramref name="size"/>.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, long size, out List<Extent> extents)
    {
        extents = [];
        return TryDecode(data, size, extents);
    }

    /// <summary>
    /// <see cref="TryDecode(ReadOnlySpan{byte}, long, out List{Extent})"/> into <paramref name="extents"/>, cleared
    /// first (a caller that decodes map after map keeps one list: the recorder decodes a map per version of a growing
    /// file). On false the list holds what decoded before the fault.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, long size, List<Extent> extents)
    {
        extents.Clear();
        if (!Decoder.TryCreate(data, size, out var decoder))
        {
            return false;
        }

        extents.EnsureCapacity(decoder.Count);
        while (decoder.MoveNext(out var extent))
        {
            extents.Add(extent);
        }

        return decoder.Valid;
    }

    /// <summary>
    /// Decodes a map one extent at a time, with <see cref="TryDecode"/>'s checks (it is built on this), so a reader can
    /// walk two maps side by side or put the extents where it likes instead of into a list of its own per map
    /// (<c>materialize</c>: two 4,096-extent lists were ~50 fresh pages, each a page fault).
    /// </summary>
    public ref struct Decoder
    {
        private readonly ReadOnlySpan<byte> _data;
        private readonly long _size;
        private int _pos;
        private int _left;
        private long _end;

        private Decoder(ReadOnlySpan<byte> data, long size, int pos, int count)
        {
            _data = data;
            (_size, _pos, _left, Count, Valid) = (size, pos, count, count, true);
        }

        /// <summary>How many extents the map says it holds (at most <see cref="MaxCount"/> and a third of its bytes).</summary>
        public int Count { get; }

        /// <summary>
        /// False once <see cref="MoveNext"/> met bytes that are not a well-formed map within the size (an extent out of
        /// order or past the size, a bad varint, bytes left after the last extent); true while every extent so far was
        /// well formed. Whether the whole map is: read it to the end, then ask.
        /// </summary>
        public bool Valid { get; private set; }

        /// <summary>A decoder of <paramref name="data"/>, or false when its count is already impossible.</summary>
        public static bool TryCreate(ReadOnlySpan<byte> data, long size, out Decoder decoder)
        {
            decoder = default;
            var pos = 0;
            if (size < 0 || !Varint.TryRead(data, ref pos, out var count) || count > (ulong)data.Length / 3 || count > MaxCount)
            {
                return false;
            }

            decoder = new Decoder(data, size, pos, (int)count);
            return true;
        }

        /// <summary>The next extent; false at the end of the map, or at the first malformed one (then <see cref="Valid"/> is false).</summary>
        public bool MoveNext(out Extent extent)
        {
            extent = default;
            if (!Valid)
            {
                return false;
            }

            if (_left == 0)
            {
                Valid = _pos == _data.Length;
                return false;
            }

            if (!Varint.TryRead(_data, ref _pos, out var gap) || !Varint.TryRead(_data, ref _pos, out var length) ||
                !Varint.TryRead(_data, ref _pos, out var rowId) || length == 0 || length > int.MaxValue ||
                gap > (ulong)(_size - _end) || rowId > long.MaxValue)
            {
                Valid = false; // _end <= _size, so _end + gap cannot overflow (fuzzing: a negative size, a huge gap)
                return false;
            }

            var offset = _end + (long)gap;
            if ((long)length > _size - offset)
            {
                Valid = false;
                return false;
            }

            extent = new Extent(offset, (int)length, (long)rowId);
            _end = offset + (long)length;
            _left--;
            return true;
        }
    }

    /// <summary>The content id: SHA-256 over (offset, length, blob id) of each extent and the file size.</summary>
    public static byte[] ContentId(IReadOnlyList<(long Offset, int Length, BlobId Id)> extents, long size)
    {
        if (extents.Count <= SmallMap)
        {
            // Most files have a few chunks: their records fit on the stack, and one hash call takes them (a
            // ContentHasher and its 3 KiB buffer per version were 5% of a 20,000-file recording's thread).
            Span<byte> records = stackalloc byte[SmallMap * ContentHasher.RecordSize + 8];
            var used = 0;
            foreach (var (offset, length, id) in extents)
            {
                ContentHasher.Write(records[used..], offset, length, id);
                used += ContentHasher.RecordSize;
            }

            return DigestOfRecords(records, used, size);
        }

        var hasher = new ContentHasher();
        foreach (var (offset, length, id) in extents)
        {
            hasher.Add(offset, length, id);
        }

        return hasher.Finish(size);
    }

    /// <summary>The content id of a small map whose extent records fill <paramref name="records"/> up to <paramref name="used"/>: the size after them, hashed once.</summary>
    private static byte[] DigestOfRecords(Span<byte> records, int used, long size)
    {
        BinaryPrimitives.WriteInt64LittleEndian(records[used..], size);
        var digest = new byte[Sha256.HashSize];
        Sha256.HashData(records[..(used + 8)], digest);
        return digest;
    }

    /// <summary>
    /// <see cref="ContentId(IReadOnlyList{ValueTuple{long, int, BlobId}}, long)"/> of <paramref name="chunks"/> (a file's
    /// chunks with their ids), without a list of (offset, length, id).
    /// </summary>
    public static byte[] ContentIdOfChunks(ReadOnlySpan<(Extent Extent, BlobId Id)> chunks, long size)
    {
        if (chunks.Length <= SmallMap)
        {
            Span<byte> records = stackalloc byte[SmallMap * ContentHasher.RecordSize + 8];
            var used = 0;
            foreach (var (e, id) in chunks)
            {
                ContentHasher.Write(records[used..], e.Offset, e.Length, id);
                used += ContentHasher.RecordSize;
            }

            return DigestOfRecords(records, used, size);
        }

        var hasher = new ContentHasher();
        foreach (var (e, id) in chunks)
        {
            hasher.Add(e.Offset, e.Length, id);
        }

        return hasher.Finish(size);
    }

    /// <summary>The content id of one extent: <see cref="ContentId(IReadOnlyList{ValueTuple{long, int, BlobId}}, long)"/> of a list of it.</summary>
    public static byte[] ContentId(long offset, int length, BlobId id, long size)
    {
        Span<byte> records = stackalloc byte[ContentHasher.RecordSize + 8];
        ContentHasher.Write(records, offset, length, id);
        BinaryPrimitives.WriteInt64LittleEndian(records[ContentHasher.RecordSize..], size);
        var digest = new byte[Sha256.HashSize];
        Sha256.HashData(records, digest);
        return digest;
    }

    /// <summary>
    /// The content id computed extent by extent, so a reader checks a map of millions of extents without holding
    /// their ids. Records are gathered into one buffer per 64 extents: a hash call per extent showed up on the
    /// per-file hot path.
    /// </summary>
    private const int SmallMap = 16;

    public sealed class ContentHasher
    {
        internal const int RecordSize = 48;
        private readonly byte[] _buffer = new byte[RecordSize * 64];
        private Sha256.Hasher _hash = new();
        private int _used;

        public void Add(long offset, int length, BlobId id) => Add(offset, length, id.Bytes);

        /// <summary><see cref="Add(long, int, BlobId)"/> of an id given as its 32 bytes.</summary>
        public void Add(long offset, int length, ReadOnlySpan<byte> id)
        {
            if (_used == _buffer.Length)
            {
                _hash.Append(_buffer);
                _used = 0;
            }

            Write(_buffer.AsSpan(_used, RecordSize), offset, length, id);
            _used += RecordSize;
        }

        /// <summary>One extent's record: offset and length (little-endian, 8 bytes each), then the blob id.</summary>
        internal static void Write(Span<byte> record, long offset, int length, BlobId id) => Write(record, offset, length, id.Bytes);

        private static void Write(Span<byte> record, long offset, int length, ReadOnlySpan<byte> id)
        {
            BinaryPrimitives.WriteInt64LittleEndian(record, offset);
            BinaryPrimitives.WriteInt64LittleEndian(record[8..], length);
            id.CopyTo(record[16..]);
        }

        /// <summary>The content id of the extents added, for a file of <paramref name="size"/> bytes; call once.</summary>
        public byte[] Finish(long size)
        {
            if (_used + 8 > _buffer.Length)
            {
                _hash.Append(_buffer.AsSpan(0, _used));
                _used = 0;
            }

            BinaryPrimitives.WriteInt64LittleEndian(_buffer.AsSpan(_used), size);
            _hash.Append(_buffer.AsSpan(0, _used + 8));
            var digest = new byte[Sha256.HashSize];
            _hash.Finish(digest);
            return digest;
        }
    }
}
