using System.Buffers.Binary;
using DiffKeeper.Storage;

namespace DiffKeeper.Fuzz;

/// <summary>
/// The extent map decoder (versions.extents) as readers call it. Input: i64 file size (versions.size), then the
/// encoded map. A decoded map must be ordered, non-overlapping, within the size, and re-encode to a map that
/// decodes to the same extents.
/// </summary>
public sealed class ExtentMapTarget : FuzzTarget
{
    public static byte[] Input(long size, ReadOnlySpan<byte> map)
    {
        var input = new byte[8 + map.Length];
        BinaryPrimitives.WriteInt64LittleEndian(input, size);
        map.CopyTo(input.AsSpan(8));
        return input;
    }

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        if (input.Length < 8)
        {
            return;
        }

        var size = BinaryPrimitives.ReadInt64LittleEndian(input);
        if (!ExtentMap.TryDecode(input[8..], size, out var extents))
        {
            return;
        }

        long end = 0;
        foreach (var e in extents)
        {
            if (e.Offset < end || e.Length <= 0 || e.Offset + e.Length > size || e.BlobRowId < 0)
            {
                throw new InvalidOperationException($"decoded an impossible extent {e} (previous end {end}, size {size})");
            }

            end = e.Offset + e.Length;
        }

        if (!ExtentMap.TryDecode(ExtentMap.Encode(extents), size, out var again) || !again.SequenceEqual(extents))
        {
            throw new InvalidOperationException("a decoded extent map does not survive encoding and decoding again");
        }
    }
}
