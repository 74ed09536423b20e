using System.IO.Hashing;
using System.Security.Cryptography;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// The cheap change test of a block ingest (docs/store-format.md, "Block fingerprints"): XXH128 of a piece's bytes
/// under a secret seed. Equal fingerprints of two pieces at the same offset and of the same length are taken as equal
/// bytes, so the new piece reuses the old one's blob without SHA-256; it is not a cryptographic hash, and the seed is
/// what keeps a program that cannot read it from crafting a collision. 0 means "unknown" and never matches.
/// </summary>
public static class BlockFingerprint
{
    /// <summary>The seed of fingerprints that live only in this process's memory (`record`, keep mode): never written.</summary>
    public static long ProcessSeed { get; } = NewSeed();

    public static UInt128 Of(ReadOnlySpan<byte> data, long seed) => XxHash128.HashToUInt128(data, seed);

    public static long NewSeed() => BitConverter.ToInt64(RandomNumberGenerator.GetBytes(8));
}
