using System.Buffers.Binary;
using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Packs;

/// <summary>Byte layout of packs and pack records (docs/store-format.md, "Packs").</summary>
public static class PackFormat
{
    public const int FormatVersion = 1;
    public const int HeaderSize = 16;
    public const int RecordHeaderSize = 80;
    public const int RecordTrailerSize = 4;
    public const uint RecordMagic = 0x42524B44; // "DKRB" little-endian
    public const int RecordCodecOffset = 4; // the codec byte of a record header
    public const int MaxRawLength = 256 * 1024;

    /// <summary>Most raw bytes a group record (codec 4) holds: its members' bytes, concatenated (format 6).</summary>
    public const int MaxGroupLength = 1 << 20;

    /// <summary>The largest raw length a record of <paramref name="codec"/> may have.</summary>
    public static int MaxRawFor(BlobCodec codec) => codec == BlobCodec.Group ? MaxGroupLength : MaxRawLength;

    /// <summary>Bytes a blob row's record takes in its pack: none for a slice, which has no record.</summary>
    public static long StoredBytes(in BlobLocation loc) => loc.HasRecord ? RecordSize(loc.StoredLength) : 0;
    public const long RollSize = 1L << 30;

    public static ReadOnlySpan<byte> FileMagic => "DKPACK\r\n"u8;

    public static void WriteFileHeader(Span<byte> header)
    {
        header.Clear();
        FileMagic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], FormatVersion);
    }

    public static int RecordSize(int storedLength) => RecordHeaderSize + storedLength + RecordTrailerSize;

    /// <summary>Most bases one delta names, and most bytes they may hold together.</summary>
    public const int MaxBases = 4;
    public const int MaxPrefixLength = 1 << 20;

    /// <summary>Longest delta chain a reader follows; deeper (or cyclic) chains are damage.</summary>
    public const int MaxDepth = 64;

    /// <summary>The base digest of a delta record (as <see cref="BaseDigest(IEnumerable{BlobId})"/>) into <paramref name="digest"/>, allocating nothing.</summary>
    public static void BaseDigest(ReadOnlySpan<BlobId> bases, Span<byte> digest)
    {
        var sha = new Sha256.Hasher();
        foreach (var b in bases)
        {
            sha.Append(b.Bytes);
        }

        sha.Finish(digest);
    }

    /// <summary>The base digest of a delta record: SHA-256 over the base blob ids, in order.</summary>
    public static byte[] BaseDigest(IEnumerable<BlobId> bases)
    {
        var sha = new Sha256.Hasher();
        foreach (var b in bases)
        {
            sha.Append(b.Bytes);
        }

        var digest = new byte[Sha256.HashSize];
        sha.Finish(digest);
        return digest;
    }

    /// <summary>Encodes a base list for <c>blobs.bases</c>: count, then row ids, as unsigned LEB128.</summary>
    public static byte[] EncodeBases(IReadOnlyList<long> rows)
    {
        var buffer = new byte[Varint.MaxLength * (rows.Count + 1)];
        var pos = Varint.Write(buffer, (ulong)rows.Count);
        foreach (var r in rows)
        {
            pos += Varint.Write(buffer.AsSpan(pos), (ulong)r);
        }

        return buffer[..pos];
    }

    /// <summary>Decodes <c>blobs.bases</c>; null when malformed (more than <see cref="MaxBases"/>, trailing bytes).</summary>
    public static long[]? DecodeBases(ReadOnlySpan<byte> data)
    {
        var pos = 0;
        if (!Varint.TryRead(data, ref pos, out var count) || count > MaxBases)
        {
            return null;
        }

        var rows = new long[count];
        for (var i = 0; i < rows.Length; i++)
        {
            if (!Varint.TryRead(data, ref pos, out var r) || r > long.MaxValue)
            {
                return null;
            }

            rows[i] = (long)r;
        }

        return pos == data.Length ? rows : null;
    }

    public static string RelativePath(long packId)
    {
        var hex = packId.ToString("x16", System.Globalization.CultureInfo.InvariantCulture);
        return Path.Combine("packs", hex[^2..], hex + ".pack");
    }
}

/// <summary>How a blob's payload is stored. Stored as its number: never renumber.</summary>
public enum BlobCodec : byte
{
    Raw = 0,
    Zstd = 1,

    /// <summary>A zstd frame compressed against the concatenated bases as a prefix (format 2).</summary>
    ZstdDelta = 2,

    /// <summary>A bsdiff patch against the concatenated bases (format 2).</summary>
    BsDiff = 3,

    /// <summary>
    /// A group (format 6): one zstd frame of several small blobs' raw bytes concatenated, up to
    /// <see cref="PackFormat.MaxGroupLength"/>; its members are <see cref="Slice"/> rows.
    /// </summary>
    Group = 4,

    /// <summary>
    /// A member of a group (format 6): no record of its own; its bytes are the group's raw bytes from
    /// <c>blobs.offset</c>, raw length long. <c>bases</c> names the group, <c>pack_id</c> is -1.
    /// </summary>
    Slice = 5,
}

/// <summary>
/// Where a blob's record starts, as the catalog indexes it. <see cref="Bases"/> lists the base blob rows of a
/// delta codec, or the group of a slice (empty for whole blobs). For a <see cref="BlobCodec.Slice"/>,
/// <see cref="PackId"/> is -1 and <see cref="Offset"/> is where its bytes start in its group's raw bytes.
/// </summary>
public readonly record struct BlobLocation(long BlobRowId, BlobId Id, long PackId, long Offset, int RawLength, int StoredLength, BlobCodec Codec, long[] Bases)
{
    public bool IsDelta => Codec is BlobCodec.ZstdDelta or BlobCodec.BsDiff;

    public bool IsSlice => Codec == BlobCodec.Slice;

    /// <summary>Decoding it needs other blobs first (delta bases, or the group of a slice).</summary>
    public bool HasBases => IsDelta || IsSlice;

    /// <summary>It has a record of its own in a pack (every codec but a slice).</summary>
    public bool HasRecord => !IsSlice;
}
