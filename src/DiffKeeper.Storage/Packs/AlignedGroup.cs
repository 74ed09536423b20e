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

    private readonly byte[] _members = buffer.Length >= MaxMembers * Member ? buffer : throw new ArgumentException("an aligned group's buffer holds 15 blocks", nameof(buffer));
    private readonly List<long> _rows = [];

    /// <summary>The group's catalog row: added with the first member, its record written when full or at the commit.</summary>
    public long Row { get; } = row;

    public int Members => _rows.Count;

    public IReadOnlyList<long> Rows => _rows;

    public bool Full => _rows.Count == MaxMembers;

    /// <summary>The buffer, for the next group once this one is written.</summary>
    public byte[] Buffer => _members;

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

    /// <summary>A buffer for an aligned group (15 blocks), its contents unspecified.</summary>
    public static byte[] NewBuffer() => GC.AllocateUninitializedArray<byte>(MaxMembers * Member);

    /// <summary>Adds a member (exactly <see cref="Member"/> bytes); returns its offset in the group's raw bytes before the leading padding.</summary>
    public long Add(ReadOnlySpan<byte> data, long rowOfMember)
    {
        if (data.Length != Member || Full)
        {
            throw new ArgumentException("an aligned group takes whole 64 KiB blocks, at most 15", nameof(data));
        }

        var k = _rows.Count;
        data.CopyTo(_members.AsSpan(k * Member));
        _rows.Add(rowOfMember);
        return MemberOffset(k, 0);
    }

    /// <summary>Where member <paramref name="k"/> starts in the group's raw bytes, after <paramref name="lead"/> bytes of leading padding.</summary>
    public static long MemberOffset(int k, int lead) => lead + ((long)k * Member) + (k / 2 * (long)PairPad);

    /// <summary>
    /// The record's payload (a zstd frame of raw blocks) for a record that starts at <paramref name="recordOffset"/> of
    /// its pack, written into <paramref name="payload"/> (at least <see cref="PackFormat.MaxGroupLength"/> + 4 KiB);
    /// returns the payload's length, the group's raw length, its id and the leading padding (add it to every member's
    /// offset). With <paramref name="trailer"/>, 16 random bytes end the raw bytes (a group whose bytes are some blob's).
    /// </summary>
    public (int Stored, int Raw, BlobId Id, int Lead) Layout(long recordOffset, Span<byte> payload, bool trailer)
    {
        var lead = (int)((Alignment - ((recordOffset + PackFormat.RecordHeaderSize + FrameHeader + (2 * BlockHeader)) % Alignment)) % Alignment);
        var n = _rows.Count;
        var raw = (int)MemberOffset(n - 1, lead) + Member + (trailer ? TrailerLength : 0); // no padding after the last pair

        BinaryPrimitives.WriteUInt32LittleEndian(payload, 0xFD2FB528);
        payload[4] = 0xA0; // content size in 4 bytes, single segment, no checksum, no dictionary
        BinaryPrimitives.WriteUInt32LittleEndian(payload[5..], (uint)raw);
        var at = FrameHeader;
        var sha = new Sha256.Hasher();
        Span<byte> zeros = stackalloc byte[Alignment];
        zeros.Clear();

        Block(payload, ref at, ref sha, zeros[..lead], false);
        for (var k = 0; k < n; k += 2)
        {
            if (k > 0)
            {
                Block(payload, ref at, ref sha, zeros[..PairPad], false);
            }

            var count = Math.Min(2, n - k);
            Block(payload, ref at, ref sha, _members.AsSpan(k * Member, count * Member), last: !trailer && k + count == n);
        }

        if (trailer)
        {
            Span<byte> random = stackalloc byte[TrailerLength];
            System.Security.Cryptography.RandomNumberGenerator.Fill(random);
            Block(payload, ref at, ref sha, random, last: true);
        }

        var id = new byte[Sha256.HashSize];
        sha.Finish(id);
        return (at, raw, new BlobId(id), lead);
    }

    /// <summary>Appends a raw zstd block of <paramref name="bytes"/> at <paramref name="at"/> and hashes them as raw bytes of the group.</summary>
    private static void Block(Span<byte> payload, ref int at, ref Sha256.Hasher sha, ReadOnlySpan<byte> bytes, bool last)
    {
        var header = (last ? 1u : 0u) | ((uint)bytes.Length << 3); // block type 0: raw
        payload[at] = (byte)header;
        payload[at + 1] = (byte)(header >> 8);
        payload[at + 2] = (byte)(header >> 16);
        bytes.CopyTo(payload[(at + BlockHeader)..]);
        at += BlockHeader + bytes.Length;
        sha.Append(bytes);
    }
}
