using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// The delta codecs of pack records (docs/store-format.md, "Delta codecs"): a blob encoded against a prefix (its
/// bases' bytes concatenated). Thread-safe.
/// </summary>
public static class DeltaCodec
{
    /// <summary>
    /// Encodes <paramref name="source"/> against <paramref name="prefix"/>; returns the payload, or null when the
    /// delta would not be smaller than <paramref name="limit"/> bytes (then the blob stays as it is).
    /// </summary>
    public static byte[]? Encode(BlobCodec codec, ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> source, int limit)
    {
        switch (codec)
        {
            case BlobCodec.ZstdDelta:
                var buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(source.Length));
                try
                {
                    var n = Zstd.CompressWithPrefix(source, prefix, buffer);
                    return n < limit ? buffer.AsSpan(0, n).ToArray() : null;
                }
                finally
                {
                    System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
                }

            case BlobCodec.BsDiff:
                var patch = BsDiff.Diff(prefix, source);
                return patch.Length < limit ? patch : null;
            default:
                throw new ArgumentOutOfRangeException(nameof(codec), codec, "not a delta codec");
        }
    }

    /// <summary>Decodes a delta payload into exactly <paramref name="destination"/>; false (with the reason) when it does not decode to that.</summary>
    public static bool TryDecode(BlobCodec codec, ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> payload, Span<byte> destination, out string error)
    {
        switch (codec)
        {
            case BlobCodec.ZstdDelta:
                return Zstd.TryDecompressWithPrefix(payload, prefix, destination, out error);
            case BlobCodec.BsDiff:
                return BsDiff.TryPatch(prefix, payload, destination, out error);
            default:
                error = $"codec {(int)codec} is not a delta codec";
                return false;
        }
    }
}
