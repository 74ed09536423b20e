using System.Buffers.Binary;
using DiffKeeper.Storage.Packs;
using Xunit;

namespace DiffKeeper.Storage.Tests;

/// <summary>This tests' own reading of an aligned group's record (linked into the replay tests too).</summary>
public static class AlignedGroupFrame
{
    /// <summary>
    /// Where a slice's bytes lie in its group's pack, found from the record's zstd frame by this test's own reading of
    /// the format (frame header, then 3-byte block headers); null when the frame is not one of raw blocks (a group
    /// maintenance re-encoded).
    /// </summary>
    public static long? RawOffset(string store, BlobLocation group, BlobLocation slice)
    {
        using var pack = File.OpenHandle(Path.Combine(store, PackFormat.RelativePath(group.PackId)));
        var record = new byte[PackFormat.RecordSize(group.StoredLength)];
        Assert.Equal(record.Length, RandomAccess.Read(pack, record, group.Offset));
        var frame = record.AsSpan(PackFormat.RecordHeaderSize, group.StoredLength);
        Assert.Equal(0xFD2FB528u, BinaryPrimitives.ReadUInt32LittleEndian(frame));
        if (frame[4] != 0xA0 || ((frame[9] >> 1) & 3) != 0)
        {
            return null;
        }

        Assert.Equal((uint)group.RawLength, BinaryPrimitives.ReadUInt32LittleEndian(frame[5..]));
        var pos = 9;
        long content = 0;
        while (true)
        {
            var h = frame[pos] | (frame[pos + 1] << 8) | (frame[pos + 2] << 16);
            if (((h >> 1) & 3) != 0)
            {
                return null;
            }

            var size = h >> 3;
            if (slice.Offset >= content && slice.Offset + slice.RawLength <= content + size)
            {
                return group.Offset + PackFormat.RecordHeaderSize + pos + 3 + (slice.Offset - content);
            }

            content += size;
            pos += 3 + size;
            Assert.True((h & 1) == 0, "the slice lies in no raw block of its group");
        }
    }
}
