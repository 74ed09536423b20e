using System.Buffers.Binary;

namespace DiffKeeper.Storage.Packs;

/// <summary>Byte layout of packs and pack records (docs/store-format.md, "Packs").</summary>
public static class PackFormat
{
    public const int FormatVersion = 1;
    public const int HeaderSize = 16;
    public const int RecordHeaderSize = 80;
    public const int RecordTrailerSize = 4;
    public const uint RecordMagic = 0x42524B44; // "DKRB" little-endian
    public const int MaxRawLength = 256 * 1024;
    public const long RollSize = 1L << 30;

    public static ReadOnlySpan<byte> FileMagic => "DKPACK\r\n"u8;

    public static void WriteFileHeader(Span<byte> header)
    {
        header.Clear();
        FileMagic.CopyTo(header);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], FormatVersion);
    }

    public static int RecordSize(int storedLength) => RecordHeaderSize + storedLength + RecordTrailerSize;

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
}

/// <summary>Where a blob's record starts, as the catalog indexes it.</summary>
public readonly record struct BlobLocation(long BlobRowId, BlobId Id, long PackId, long Offset, int RawLength, int StoredLength, BlobCodec Codec);
