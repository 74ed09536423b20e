using System.Buffers.Binary;
using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Packs;

/// <summary>
/// A group of whole 64 KiB blocks that zstd would shrink by less than an eighth, written so that every member's bytes
/// lie uncompressed at a 4 KiB-aligned offset of the pack (docs/store-format.md, "Aligned groups"): a materialization
/// beside the parent version can then share them with FICLONERANGE instead of writing them. The record is an ordinary
/// group (codec 4): one zstd frame, here made only of raw blocks, which any zstd decoder reads. Its raw bytes are
/// padding (zeros no slice names) before the first member and between every two pairs of members, so that, with the
/// frame's 3-byte block headers, each member starts on a 4 KiB boundary of the pack; the padding depends on where the
/// record starts, so members get their final offsets only when the record is written (<see cref="Layout"/>).
/// </summary>
internal sealed class AlignedGroup(long row, byte[] buffer)
{
    public const int Member = 64 << 10;
    public const int Alignment = 4096;

    /// <summary>Most members: 15 blocks and their padding stay within <see cref="PackFormat.MaxGroupLength"/>.</summary>
    public const int MaxMembers = 15;

    private const int FrameHeader = 9; // magic, descriptor (single segment, 4-byte content size), content size
    private const int BlockHeader = 3;
    private const int PairPad = Alignment - 2 * BlockHeader; // a raw block of zeros between two pairs of members
    private const int TrailerLength = 16;

    // The buffer holds the record's payload as it will be written: members at fixed places after room for the frame
    // header and the lead (which depends on where the record lands), with their block headers and the blocks of zeros
    // between pairs, so writing the record copies nothing (Layout writes only the part before the first member).
    private const int FirstMemberAt = FrameHeader + BlockHeader + (Alignment - 1) + BlockHeader + 1;
    private const int PairStride = (2 * Member) + Alignment;

    /// <summary>Bytes of an aligned group's buffer: the largest payload, trailer included.</summary>
    public const int BufferLength = FirstMemberAt + (MaxMembers * Member) + (MaxMembers / 2 * Alignment) + BlockHeader + TrailerLength;

    private readonly byte[] _payload = buffer.Length >= BufferLength ? buffer : throw new ArgumentException("an aligned group's buffer is BufferLength long", nameof(buffer));
    private readonly List<long> _rows = [];

    /// <summary>The group's catalog row: added with the first member, its record written when full or at the commit.</summary>
    public long Row { get; } = row;

    public int Members => _rows.Count;

    public IReadOnlyList<long> Rows => _rows;

    public bool Full => _rows.Count == MaxMembers;

    /// <summary>The buffer, for the next group once this one is written.</summary>
    public byte[] Buffer => _payload;

    /// <summary>
    /// Whether <paramref name="record"/>, found at offset <paramref name="at"/> of its pack, is an aligned group there: a
    /// group whose frame (as <see cref="Layout"/> writes it) starts with a raw block of padding followed by a raw block
    /// that starts on a 4 KiB boundary. What repacking keeps aligned.
    /// </summary>
    public static bool IsAlignedAt(ReadOnlySpan<byte> record, long at)
    {
        var frame = PackFormat.RecordHeaderSize;
        if (record.Length < frame + FrameHeader + (2 * BlockHeader) || record[4] != (byte)BlobCodec.Group ||
            BinaryPrimitives.ReadUInt32LittleEndian(record[frame..]) != 0xFD2FB528 || record[frame + 4] != 0xA0)
        {
            return false;
        }

        var lead = record[(frame + FrameHeader)..];
        var h = lead[0] | (lead[1] << 8) | (lead[2] << 16);
        var next = frame + FrameHeader + BlockHeader + (h >> 3);
        return (h & 7) == 0 && next + BlockHeader <= record.Length && ((record[next] >> 1) & 3) == 0 &&
            (at + next + BlockHeader) % Alignment == 0;
    }

    /// <summary>A buffer for an aligned group, its contents unspecified.</summary>
    public static byte[] NewBuffer() => GC.AllocateUninitializedArray<byte>(BufferLength);

    /// <summary>Adds a member (exactly <see cref="Member"/> bytes); returns its offset in the group's raw bytes before the leading padding.</summary>
    public long Add(ReadOnlySpan<byte> data, long rowOfMember)
    {
        if (data.Length != Member || Full)
        {
            throw new ArgumentException("an aligned group takes whole 64 KiB blocks, at most 15", nameof(data));
        }

        var k = _rows.Count;
        var at = At(k);
        data.CopyTo(_payload.AsSpan(at));
        if (k % 2 == 0)
        {
            if (k > 0)
            {
                // The block of zeros between the last pair and this one.
                var pad = At(k - 1) + Member;
                BlockHeaderAt(pad, PairPad, last: false);
                _payload.AsSpan(pad + BlockHeader, PairPad).Clear();
            }

            BlockHeaderAt(at - BlockHeader, Member, last: false);
        }
        else
        {
            BlockHeaderAt(At(k - 1) - BlockHeader, 2 * Member, last: false);
        }

        _rows.Add(rowOfMember);
        return MemberOffset(k, 0);
    }

    /// <summary>Where member <paramref name="k"/>'s bytes are in the buffer (and in the payload, less its start).</summary>
    private static int At(int k) => FirstMemberAt + (k / 2 * PairStride) + (k % 2 * Member);

    private void BlockHeaderAt(int at, int size, bool last)
    {
        var header = (last ? 1u : 0u) | ((uint)size << 3); // block type 0: raw
        _payload[at] = (byte)header;
        _payload[at + 1] = (byte)(header >> 8);
        _payload[at + 2] = (byte)(header >> 16);
    }

    /// <summary>Where member <paramref name="k"/> starts in the group's raw bytes, after <paramref name="lead"/> bytes of leading padding.</summary>
    public static long MemberOffset(int k, int lead) => lead + ((long)k * Member) + (k / 2 * (long)PairPad);

    /// <summary>
    /// Completes the record's payload (a zstd frame of raw blocks) for a record that starts at
    /// <paramref name="recordOffset"/> of its pack, in the buffer; returns where the payload starts in
    /// <see cref="Buffer"/> and its length, the group's raw length, its id and the leading padding (add it to every
    /// member's offset). With <paramref name="trailer"/>, 16 random bytes end the raw bytes (a group whose bytes are some
    /// blob's). May be called again (with a trailer) for the same place.
    /// </summary>
    public (int Start, int Stored, int Raw, BlobId Id, int Lead) Layout(long recordOffset, bool trailer)
    {
        var n = _rows.Count;
        var lead = (int)((Alignment - ((recordOffset + PackFormat.RecordHeaderSize + FrameHeader + (2 * BlockHeader)) % Alignment)) % Alignment);
        var raw = (int)MemberOffset(n - 1, lead) + Member + (trailer ? TrailerLength : 0); // no padding after the last pair
        var start = FirstMemberAt - BlockHeader - lead - BlockHeader - FrameHeader;
        BinaryPrimitives.WriteUInt32LittleEndian(_payload.AsSpan(start), 0xFD2FB528);
        _payload[start + 4] = 0xA0; // content size in 4 bytes, single segment, no checksum, no dictionary
        BinaryPrimitives.WriteUInt32LittleEndian(_payload.AsSpan(start + 5), (uint)raw);
        BlockHeaderAt(start + FrameHeader, lead, last: false);
        _payload.AsSpan(start + FrameHeader + BlockHeader, lead).Clear();
        var lastPair = (n - 1) / 2 * 2;
        BlockHeaderAt(At(lastPair) - BlockHeader, (n - lastPair) * Member, last: !trailer);
        var end = At(n - 1) + Member;
        if (trailer)
        {
            BlockHeaderAt(end, TrailerLength, last: true);
            System.Security.Cryptography.RandomNumberGenerator.Fill(_payload.AsSpan(end + BlockHeader, TrailerLength));
            end += BlockHeader + TrailerLength;
        }

        // The raw bytes: the lead's zeros, each pair's members, the zeros between pairs, the trailer.
        var sha = new Sha256.Hasher();
        sha.Append(_payload.AsSpan(start + FrameHeader + BlockHeader, lead));
        for (var k = 0; k < n; k += 2)
        {
            if (k > 0)
            {
                sha.Append(_payload.AsSpan(At(k - 1) + Member + BlockHeader, PairPad));
            }

            sha.Append(_payload.AsSpan(At(k), Math.Min(2, n - k) * Member));
        }

        if (trailer)
        {
            sha.Append(_payload.AsSpan(end - TrailerLength, TrailerLength));
        }

        var id = new byte[Sha256.HashSize];
        sha.Finish(id);
        return (start, end - start, raw, new BlobId(id), lead);
    }
}
