using System.Buffers;
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

    /// <summary>Decodes an extent map; returns false when the bytes are not a well-formed map within <paramref name="size"/>.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, long size, out List<Extent> extents)
    {
        extents = [];
        var pos = 0;
        if (!Varint.TryRead(data, ref pos, out var count) || count > (ulong)data.Length)
        {
            return false;
        }

        long end = 0;
        for (ulong i = 0; i < count; i++)
        {
            if (!Varint.TryRead(data, ref pos, out var gap) || !Varint.TryRead(data, ref pos, out var length) ||
                !Varint.TryRead(data, ref pos, out var rowId) || length == 0 || length > int.MaxValue ||
                gap > (ulong)size || rowId > long.MaxValue)
            {
                return false;
            }

            var offset = end + (long)gap;
            if (offset + (long)length > size)
            {
                return false;
            }

            extents.Add(new Extent(offset, (int)length, (long)rowId));
            end = offset + (long)length;
        }

        return pos == data.Length;
    }

    /// <summary>The content id: SHA-256 over (offset, length, blob id) of each extent and the file size.</summary>
    public static byte[] ContentId(IReadOnlyList<(long Offset, int Length, BlobId Id)> extents, long size)
    {
        // One buffer and one hash call: IncrementalHash allocates a native context per call, which showed up on
        // the per-file hot path.
        var length = extents.Count * 48 + 8;
        var buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            var span = buffer.AsSpan(0, length);
            for (var i = 0; i < extents.Count; i++)
            {
                var (offset, len, id) = extents[i];
                var record = span.Slice(i * 48, 48);
                BinaryPrimitives.WriteInt64LittleEndian(record, offset);
                BinaryPrimitives.WriteInt64LittleEndian(record[8..], len);
                id.Bytes.CopyTo(record[16..]);
            }

            BinaryPrimitives.WriteInt64LittleEndian(span[^8..], size);
            return Sha256.HashData(span);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
