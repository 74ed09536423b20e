using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Remote;

/// <summary>One record of a remote pack, as its index lists it.</summary>
public readonly record struct RemoteBlob(BlobId Id, string Pack, long Offset, int RawLength, int StoredLength, BlobCodec Codec);

/// <summary>The index object of one remote pack (docs/store-format.md, "Remote stores": pack index).</summary>
public static class PackIndex
{
    private const int EntrySize = 52;
    private const int HeaderSize = 24;
    private static ReadOnlySpan<byte> Magic => "DKIDX\r\n\0"u8;

    public static byte[] Encode(long packSize, IReadOnlyList<RemoteBlob> records)
    {
        var bytes = new byte[HeaderSize + EntrySize * records.Count];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(8), 1);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), records.Count);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), packSize);
        for (var i = 0; i < records.Count; i++)
        {
            var e = bytes.AsSpan(HeaderSize + i * EntrySize, EntrySize);
            records[i].Id.Bytes.CopyTo(e);
            BinaryPrimitives.WriteInt64LittleEndian(e[32..], records[i].Offset);
            BinaryPrimitives.WriteInt32LittleEndian(e[40..], records[i].RawLength);
            BinaryPrimitives.WriteInt32LittleEndian(e[44..], records[i].StoredLength);
            e[48] = (byte)records[i].Codec;
        }

        return bytes;
    }

    /// <summary>The records of pack <paramref name="pack"/>; a malformed index is damage (exit 5) naming it.</summary>
    public static List<RemoteBlob> Decode(string pack, ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length < HeaderSize || !bytes[..8].SequenceEqual(Magic) || BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]) != 1)
        {
            throw Damaged(pack, "bad header");
        }

        var count = BinaryPrimitives.ReadInt32LittleEndian(bytes[12..]);
        var packSize = BinaryPrimitives.ReadInt64LittleEndian(bytes[16..]);
        if (count < 0 || bytes.Length != HeaderSize + (long)count * EntrySize)
        {
            throw Damaged(pack, $"length {bytes.Length} does not hold {count} records");
        }

        var list = new List<RemoteBlob>(count);
        for (var i = 0; i < count; i++)
        {
            var e = bytes.Slice(HeaderSize + i * EntrySize, EntrySize);
            var b = new RemoteBlob(new BlobId(e[..32].ToArray()), pack, BinaryPrimitives.ReadInt64LittleEndian(e[32..]),
                BinaryPrimitives.ReadInt32LittleEndian(e[40..]), BinaryPrimitives.ReadInt32LittleEndian(e[44..]), (BlobCodec)e[48]);
            if (b.Offset < PackFormat.HeaderSize || b.StoredLength < 0 || b.RawLength is < 0 or > PackFormat.MaxRawLength
                || b.Offset + PackFormat.RecordSize(b.StoredLength) > packSize || b.Codec is not (BlobCodec.Raw or BlobCodec.Zstd))
            {
                throw Damaged(pack, $"record {i} is impossible (offset {b.Offset}, stored {b.StoredLength}, codec {(int)b.Codec})");
            }

            list.Add(b);
        }

        return list;
    }

    private static DiffKeeperException Damaged(string pack, string why) =>
        new(ExitCode.Corrupt, $"the index of remote pack {pack} is damaged ({why})");
}
