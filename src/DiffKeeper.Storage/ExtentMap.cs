using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;

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
        var pos = WriteVarint(buffer, 0, (ulong)extents.Count);
        long end = 0;
        foreach (var e in extents)
        {
            pos = WriteVarint(buffer, pos, (ulong)(e.Offset - end));
            pos = WriteVarint(buffer, pos, (ulong)e.Length);
            pos = WriteVarint(buffer, pos, (ulong)e.BlobRowId);
            end = e.Offset + e.Length;
        }

        return buffer[..pos];
    }

    /// <summary>Decodes an extent map; returns false when the bytes are not a well-formed map within <paramref name="size"/>.</summary>
    public static bool TryDecode(ReadOnlySpan<byte> data, long size, out List<Extent> extents)
    {
        extents = [];
        var pos = 0;
        if (!TryReadVarint(data, ref pos, out var count) || count > (ulong)data.Length)
        {
            return false;
        }

        long end = 0;
        for (ulong i = 0; i < count; i++)
        {
            if (!TryReadVarint(data, ref pos, out var gap) || !TryReadVarint(data, ref pos, out var length) ||
                !TryReadVarint(data, ref pos, out var rowId) || length == 0 || length > int.MaxValue ||
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
            return SHA256.HashData(span);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static int WriteVarint(byte[] buffer, int pos, ulong value)
    {
        while (value >= 0x80)
        {
            buffer[pos++] = (byte)(value | 0x80);
            value >>= 7;
        }

        buffer[pos++] = (byte)value;
        return pos;
    }

    private static bool TryReadVarint(ReadOnlySpan<byte> data, ref int pos, out ulong value)
    {
        value = 0;
        for (var shift = 0; shift < 64; shift += 7)
        {
            if (pos >= data.Length)
            {
                return false;
            }

            var b = data[pos++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }
}
