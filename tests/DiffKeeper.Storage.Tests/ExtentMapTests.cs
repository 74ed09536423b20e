using System.Buffers.Binary;

namespace DiffKeeper.Storage.Tests;

/// <summary>The extent map decoder against what the fuzzer found (fuzz/README.md, target extent-map).</summary>
public sealed class ExtentMapTests
{
    // fuzz/run.sh extent-map, 2026-12-06, crash id 000000 (after 1.2 million executions): the input's first 8 bytes are
    // the version's size (negative here), the rest the map. A negative size made every gap look small, and the
    // decoder returned an extent at offset -6,246,315,101,212,765,144.
    [Fact]
    public void A_negative_size_is_refused()
    {
        var input = Convert.FromHexString("0101a888a8a8a8e101a8a8b8a8a8b0a8a8a90311b1a8c1a8a8a801");
        var size = BinaryPrimitives.ReadInt64LittleEndian(input);
        Assert.True(size < 0);
        Assert.False(ExtentMap.TryDecode(input.AsSpan(8), size, out _));
    }

    [Fact]
    public void A_gap_that_would_overflow_past_the_end_is_refused()
    {
        // Two extents: one ending 90 bytes before long.MaxValue, then a gap of long.MaxValue. end + gap overflowed to a
        // negative offset, which "offset + length > size" let through.
        var data = new List<byte>();
        void Put(ulong v)
        {
            Span<byte> b = stackalloc byte[10];
            var n = 0;
            do
            {
                var x = (byte)(v & 0x7F);
                v >>= 7;
                b[n++] = v == 0 ? x : (byte)(x | 0x80);
            }
            while (v != 0);
            data.AddRange(b[..n].ToArray());
        }

        Put(2);
        Put(long.MaxValue - 100); Put(10); Put(1);
        Put(long.MaxValue); Put(5); Put(2);
        Assert.False(ExtentMap.TryDecode(data.ToArray(), long.MaxValue, out _));

        // The same first extent alone, and a gap that fits, still decode.
        var fits = ExtentMap.Encode([new Extent(long.MaxValue - 100, 10, 1), new Extent(long.MaxValue - 50, 5, 2)]);
        Assert.True(ExtentMap.TryDecode(fits, long.MaxValue, out var extents));
        Assert.Equal([long.MaxValue - 100, long.MaxValue - 50], extents.Select(e => e.Offset));
    }
}
