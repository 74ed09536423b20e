using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage;

/// <summary>The SHA-256 of a blob's raw bytes: its name in the store.</summary>
public readonly struct BlobId : IEquatable<BlobId>
{
    /// <summary>The length of an id in bytes.</summary>
    public const int Size = 32;

    private readonly byte[] _bytes;

    public BlobId(byte[] bytes)
    {
        if (bytes.Length != 32)
        {
            throw new ArgumentException("a blob id is 32 bytes", nameof(bytes));
        }

        _bytes = bytes;
    }

    public ReadOnlySpan<byte> Bytes => _bytes;

    public byte[] ToArray() => (byte[])_bytes.Clone();

    public static BlobId Of(ReadOnlySpan<byte> data)
    {
        var h = new byte[32];
        Sha256.HashData(data, h);
        return new BlobId(h);
    }

    public string ToHex() => Convert.ToHexStringLower(_bytes);

    /// <summary>The first 12 hex digits, enough to name a blob to a person.</summary>
    public string Short => ToHex()[..12];

    public override string ToString() => ToHex();

    public bool Equals(BlobId other) => _bytes.AsSpan().SequenceEqual(other._bytes);

    public override bool Equals(object? obj) => obj is BlobId other && Equals(other);

    public override int GetHashCode() => BitConverter.ToInt32(_bytes, 0);

    public static bool operator ==(BlobId a, BlobId b) => a.Equals(b);

    public static bool operator !=(BlobId a, BlobId b) => !a.Equals(b);
}
