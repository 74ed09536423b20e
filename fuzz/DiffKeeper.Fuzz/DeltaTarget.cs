using System.Buffers.Binary;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Fuzz;

/// <summary>
/// A delta decoder as the pack reader calls it. Input: u32 raw length (the catalog's, taken modulo the largest
/// raw length), u32 prefix length, the prefix (the bases' bytes), then the payload. A false return is the clean
/// rejection; the decoder must never write past or short of the destination, throw, or hang. Then the same payload
/// goes through the pack reader's record check (<c>PackReader.CheckRecord</c>) in a record built around it, named by
/// the hash of what it decoded to: that check must accept what decodes and reject the rest with a
/// <see cref="BlobDamagedException"/>. (The zstd decoder itself is native libzstd: afl-fuzz sees only the managed
/// edges around it, so for zstd this target is close to a blind fuzzer.)
/// </summary>
public sealed class DeltaTarget(BlobCodec codec) : FuzzTarget
{
    public const int HeaderSize = 8;

    public static byte[] Input(int rawLength, ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> payload)
    {
        var input = new byte[HeaderSize + prefix.Length + payload.Length];
        BinaryPrimitives.WriteInt32LittleEndian(input, rawLength);
        BinaryPrimitives.WriteInt32LittleEndian(input.AsSpan(4), prefix.Length);
        prefix.CopyTo(input.AsSpan(HeaderSize));
        payload.CopyTo(input.AsSpan(HeaderSize + prefix.Length));
        return input;
    }

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        if (input.Length < HeaderSize)
        {
            return;
        }

        var rawLength = (int)(BinaryPrimitives.ReadUInt32LittleEndian(input) % (PackFormat.MaxRawLength + 1));
        var prefixLength = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(input[4..]), (uint)(input.Length - HeaderSize));
        var prefix = input.Slice(HeaderSize, prefixLength);
        var payload = input[(HeaderSize + prefixLength)..];

        // Guard bytes on both sides catch a write outside the destination.
        var buffer = new byte[rawLength + 64];
        buffer.AsSpan().Fill(0xA5);
        var destination = buffer.AsSpan(32, rawLength);
        var ok = DeltaCodec.TryDecode(codec, prefix, payload, destination, out var error);
        if (buffer.AsSpan(0, 32).ContainsAnyExcept((byte)0xA5) || buffer.AsSpan(32 + rawLength).ContainsAnyExcept((byte)0xA5))
        {
            throw new InvalidOperationException($"{codec} wrote outside its destination of {rawLength} bytes");
        }

        if (ok != string.IsNullOrEmpty(error))
        {
            throw new InvalidOperationException($"{codec} returned {ok} with error '{error}'");
        }

        ThroughPackReader(prefix, payload, ok ? BlobId.Of(destination) : new BlobId(new byte[32]), rawLength, ok);
    }

    private void ThroughPackReader(ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> payload, BlobId id, int rawLength, bool decodes)
    {
        var record = new byte[PackFormat.RecordSize(payload.Length)];
        BinaryPrimitives.WriteUInt32LittleEndian(record, PackFormat.RecordMagic);
        record[4] = (byte)codec;
        BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(8), rawLength);
        BinaryPrimitives.WriteInt32LittleEndian(record.AsSpan(12), payload.Length);
        id.Bytes.CopyTo(record.AsSpan(16));
        var baseDigest = PackFormat.BaseDigest([id]);
        baseDigest.CopyTo(record, 48);
        payload.CopyTo(record.AsSpan(PackFormat.RecordHeaderSize));
        var loc = new BlobLocation(1, id, 1, 0, rawLength, payload.Length, codec, [1]);
        try
        {
            PackReader.CheckRecord(loc, "fuzz.pack", record, new byte[rawLength], prefix, baseDigest, decode: true);
            if (!decodes)
            {
                throw new InvalidOperationException($"the pack reader accepted a {codec} record its decoder rejects");
            }
        }
        catch (BlobDamagedException) when (!decodes)
        {
        }
    }
}
