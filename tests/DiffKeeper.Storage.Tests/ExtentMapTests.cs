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

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(16)]
    [InlineData(17)]
    [InlineData(40)]
    [InlineData(300)]
    public void A_map_and_content_id_made_from_chunks_equal_those_made_from_lists(int count)
    {
        // EncodeChunks and ContentIdOfChunks (the recorder's, without lists) against Encode and ContentId: across the
        // stack buffer's end (~33 extents of large numbers) and the content id's small-map path (16).
        var random = new Random(count);
        var chunks = new List<(Extent Extent, BlobId Id)>();
        long offset = random.Next(0, 5);
        for (var i = 0; i < count; i++)
        {
            var length = random.Next(1, 300_000);
            var id = new byte[32];
            random.NextBytes(id);
            chunks.Add((new Extent(offset, length, random.NextInt64(1, long.MaxValue)), new BlobId(id)));
            offset += length + (random.Next(3) == 0 ? random.NextInt64(1, 1L << 40) : 0);
        }

        var size = offset + random.Next(0, 1000);
        var span = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(chunks);
        Assert.Equal(ExtentMap.Encode(chunks.Select(c => c.Extent).ToList()), ExtentMap.EncodeChunks(span));
        Assert.Equal(ExtentMap.ContentId(chunks.Select(c => (c.Extent.Offset, c.Extent.Length, c.Id)).ToList(), size), ExtentMap.ContentIdOfChunks(span, size));

        // Decoding into a list the caller keeps: emptied first, then the same extents as a new list gets.
        var kept = new List<Extent> { new(1, 2, 3) };
        Assert.True(ExtentMap.TryDecode(ExtentMap.EncodeChunks(span), size, kept));
        Assert.True(ExtentMap.TryDecode(ExtentMap.EncodeChunks(span), size, out List<Extent> fresh));
        Assert.Equal(fresh, kept);
    }

    /// <summary>
    /// The decoder materialize walks maps with gives TryDecode's extents one at a time and the same verdict on every
    /// malformed map: bytes after the last extent, a truncated last extent, an extent past the size, an impossible count.
    /// </summary>
    [Fact]
    public void The_decoder_walks_what_TryDecode_reads_and_refuses_what_it_refuses()
    {
        var random = new Random(16);
        var extents = new List<Extent>();
        long at = 0;
        for (var i = 0; i < 500; i++)
        {
            at += random.Next(3) == 0 ? random.Next(1, 100_000) : 0;
            var length = random.Next(1, 65_537);
            extents.Add(new Extent(at, length, random.NextInt64(1, long.MaxValue)));
            at += length;
        }

        var size = at + 10;
        var map = ExtentMap.Encode(extents);
        Assert.True(ExtentMap.Decoder.TryCreate(map, size, out var decoder));
        Assert.Equal(extents.Count, decoder.Count);
        var walked = new List<Extent>();
        while (decoder.MoveNext(out var e))
        {
            walked.Add(e);
        }

        Assert.True(decoder.Valid);
        Assert.Equal(extents, walked);
        Assert.False(decoder.MoveNext(out _));

        byte[][] malformed =
        [
            [.. map, 0],                 // a byte after the last extent
            map[..^1],                   // the last extent cut short
        ];
        foreach (var bad in malformed)
        {
            Assert.False(ExtentMap.TryDecode(bad, size, out _));
            Assert.True(ExtentMap.Decoder.TryCreate(bad, size, out var d));
            var n = 0;
            while (d.MoveNext(out _))
            {
                n++;
            }

            Assert.False(d.Valid);
            Assert.True(n <= extents.Count);
        }

        // The last extent past the size: every extent before it decodes, then the walk stops refused.
        Assert.False(ExtentMap.TryDecode(map, at - 1, out _));
        Assert.True(ExtentMap.Decoder.TryCreate(map, at - 1, out var short1));
        var before = 0;
        while (short1.MoveNext(out _))
        {
            before++;
        }

        Assert.Equal(extents.Count - 1, before);
        Assert.False(short1.Valid);

        // A count the bytes cannot hold is refused before any extent.
        Assert.False(ExtentMap.Decoder.TryCreate(ExtentMap.Encode(extents)[..4], size, out _));
        Assert.False(ExtentMap.Decoder.TryCreate(map, -1, out _));
    }
}
