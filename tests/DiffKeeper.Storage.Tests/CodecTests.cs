using DiffKeeper.Storage.Chunking;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

public sealed class CodecTests
{
    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4095)]
    [InlineData((128 << 10) - 1)]
    [InlineData(128 << 10)]
    [InlineData((128 << 10) + 1)]
    [InlineData(PackFormat.MaxRawLength)]
    [InlineData(PackFormat.MaxGroupLength)]
    [InlineData(64 << 20)]
    public void CompressBound_computed_here_is_libzstds(int length) =>
        Assert.Equal((int)Native.Interop.LibZstd.CompressBound((nuint)length), Zstd.CompressBound(length));

    [Fact]
    public void Crc32C_matches_the_standard_check_value()
    {
        Assert.Equal(0xE3069283u, Crc32C.Compute("123456789"u8));
        Assert.Equal(0u, Crc32C.Compute([]));
        var data = new byte[1000];
        new Random(1).NextBytes(data);
        Assert.Equal(Crc32C.Compute(data), Crc32C.Append(Crc32C.Compute(data.AsSpan(0, 333)), data.AsSpan(333)));
    }

    [Fact]
    public void Sha256_matches_the_framework_one()
    {
        Assert.Equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", Convert.ToHexStringLower(Sha256.HashData([])));
        var data = new byte[300_000];
        new Random(2).NextBytes(data);
        foreach (var length in new[] { 1, 55, 56, 64, 65, 4096, 70_001, data.Length })
        {
            Assert.Equal(System.Security.Cryptography.SHA256.HashData(data.AsSpan(0, length)), Sha256.HashData(data.AsSpan(0, length)));
        }

        var incremental = new Sha256.Hasher();
        incremental.Append(data.AsSpan(0, 100));
        incremental.Append(data.AsSpan(100, 900));
        var digest = new byte[Sha256.HashSize];
        incremental.Finish(digest);
        Assert.Equal(System.Security.Cryptography.SHA256.HashData(data.AsSpan(0, 1000)), digest);
    }

    /// <summary>
    /// native/sha256.c and libcrypto, each called directly (whichever <see cref="Sha256"/> uses), against the framework's
    /// SHA-256: every length from 0 to 300 (the padding's edge cases) and random lengths appended in random pieces, so
    /// that a partly filled block is carried across calls.
    /// </summary>
    [Fact]
    public unsafe void Sha256_linked_and_libcrypto_both_match_the_framework_one()
    {
        Assert.SkipUnless(Native.Interop.DkSha256.Available() == 1, "this CPU lacks the SHA extensions; libcrypto is used");
        Assert.True(Sha256.Linked);
        var random = new Random(3);
        var data = new byte[300_000];
        random.NextBytes(data);
        Span<byte> linked = stackalloc byte[32];
        Span<byte> crypto = stackalloc byte[32];
        for (var t = 0; t < 1200; t++)
        {
            var length = t <= 300 ? t : random.Next(data.Length);
            var expected = System.Security.Cryptography.SHA256.HashData(data.AsSpan(0, length));
            Native.Interop.LibCrypto.Sha256Context a, b;
            Native.Interop.DkSha256.Init(&a);
            Assert.Equal(1, Native.Interop.LibCrypto.Sha256Init(&b));
            fixed (byte* p = data)
            fixed (byte* l = linked)
            fixed (byte* c = crypto)
            {
                for (var at = 0; at < length;)
                {
                    var piece = Math.Min(length - at, random.Next(4) == 0 ? random.Next(100_000) : random.Next(200));
                    Native.Interop.DkSha256.Update(&a, p + at, (nuint)piece);
                    Assert.Equal(1, Native.Interop.LibCrypto.Sha256Update(&b, p + at, (nuint)piece));
                    at += piece;
                }

                Native.Interop.DkSha256.Final(&a, l);
                Assert.Equal(1, Native.Interop.LibCrypto.Sha256Final(c, &b));
            }

            Assert.Equal(expected, linked.ToArray());
            Assert.Equal(expected, crypto.ToArray());
        }
    }

    [Fact]
    public void Sha256_AppendEach_equals_one_hash_per_lane()
    {
        // Up to sixteen lanes, each fed chunks of its own length per call (whole blocks, odd tails, none): every lane's
        // digest must be the framework's of its concatenated chunks, whichever path (sixteen lanes at once, or one by
        // one) native/sha256.c took for each call.
        var random = new Random(15);
        var data = new byte[16 * 70_000];
        random.NextBytes(data);
        Span<byte> digest = stackalloc byte[32];
        for (var t = 0; t < 400; t++)
        {
            var n = 1 + random.Next(Sha256.Lanes);
            var stride = 64 * (1 + random.Next(1000));
            var hashers = new Sha256.Hasher[n];
            var fed = new List<byte>[n];
            for (var i = 0; i < n; i++)
            {
                hashers[i] = new Sha256.Hasher();
                fed[i] = [];
            }

            var buffer = new byte[n * stride];
            var lengths = new int[n];
            for (var call = 0; call < 1 + random.Next(5); call++)
            {
                var whole = random.Next(3) == 0;
                for (var i = 0; i < n; i++)
                {
                    lengths[i] = whole ? stride : random.Next(4) switch { 0 => 0, 1 => random.Next(64), 2 => 64 * random.Next(stride / 64 + 1), _ => random.Next(stride + 1) };
                    var from = random.Next(data.Length - stride);
                    data.AsSpan(from, lengths[i]).CopyTo(buffer.AsSpan(i * stride));
                    fed[i].AddRange(data.AsSpan(from, lengths[i]).ToArray());
                }

                Sha256.Hasher.AppendEach(hashers, buffer, stride, lengths);
            }

            for (var i = 0; i < n; i++)
            {
                hashers[i].Finish(digest);
                Assert.Equal(System.Security.Cryptography.SHA256.HashData(fed[i].ToArray()), digest.ToArray());
            }
        }

        if (DiffKeeper.Native.Interop.DkSha256.Available() != 1 || DiffKeeper.Native.Interop.DkSha256.ManyAvailable() != 1)
        {
            Assert.Skip("this CPU lacks the SHA instructions or AVX-512: only the one-by-one path was compared, not the sixteen lanes");
        }
    }

    [Fact]
    public void Sha256_AppendEach_refuses_lanes_outside_the_buffer()
    {
        var hashers = new Sha256.Hasher[2];
        Assert.Throws<ArgumentOutOfRangeException>(() => Sha256.Hasher.AppendEach(hashers, new byte[100], 64, [10, 40]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Sha256.Hasher.AppendEach(new Sha256.Hasher[17], new byte[17 * 64], 64, new int[17]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Sha256.Hasher.AppendEach(hashers, new byte[100], -64, [10, 10]));
    }

    [Fact]
    public void Zstd_round_trips_and_rejects_damage()
    {
        var data = new byte[100_000];
        for (var i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i % 37);
        }

        var packed = new byte[Zstd.CompressBound(data.Length)];
        var n = Zstd.Compress(data, packed);
        Assert.True(n < data.Length / 10);
        var back = new byte[data.Length];
        Assert.True(Zstd.TryDecompress(packed.AsSpan(0, n), back, out _));
        Assert.Equal(data, back);
        Assert.False(Zstd.TryDecompress(packed.AsSpan(0, n / 2), back, out var error));
        Assert.NotEmpty(error);
    }

    [Fact]
    public void Zstd_with_a_prefix_stores_a_small_edit_as_a_small_delta()
    {
        var old = RandomBytes(200_000, 31);
        var edited = (byte[])old.Clone();
        RandomBytes(2_000, 32).CopyTo(edited, 100_000); // 1% rewritten
        var buffer = new byte[Zstd.CompressBound(edited.Length)];
        var plain = Zstd.Compress(edited, buffer);
        var delta = Zstd.CompressWithPrefix(edited, old, buffer);
        Assert.True(delta < 5_000, $"a 2,000-byte edit took {delta} bytes as a delta (plain: {plain})");
        var back = new byte[edited.Length];
        Assert.True(Zstd.TryDecompressWithPrefix(buffer.AsSpan(0, delta), old, back, out var error), error);
        Assert.Equal(edited, back);

        // Without its prefix the delta does not decode to the edited bytes.
        var wrong = RandomBytes(old.Length, 33);
        var ok = Zstd.TryDecompressWithPrefix(buffer.AsSpan(0, delta), wrong, back, out _);
        Assert.False(ok && back.AsSpan().SequenceEqual(edited));

        // And a plain frame still decodes after a prefixed one on the same thread.
        var n = Zstd.Compress(edited, buffer);
        Assert.True(Zstd.TryDecompress(buffer.AsSpan(0, n), back, out _));
        Assert.Equal(edited, back);
    }

    [Fact]
    public void FastCdc_cuts_within_bounds_and_deterministically()
    {
        var data = RandomBytes(3 << 20, seed: 7);
        var cuts = Cuts(data);
        Assert.Equal(data.Length, cuts.Sum());
        Assert.All(cuts.SkipLast(1), c => Assert.InRange(c, FastCdc.MinSize, FastCdc.MaxSize));
        var mean = cuts.Average();
        Assert.InRange(mean, FastCdc.AverageSize * 0.6, FastCdc.AverageSize * 1.6);
        Assert.Equal(cuts, Cuts(data));
    }

    [Fact]
    public void FastCdc_realigns_after_an_insertion()
    {
        var data = RandomBytes(2 << 20, seed: 11);
        var edited = data.Take(1_000_000).Concat(RandomBytes(100, seed: 12)).Concat(data.Skip(1_000_000)).ToArray();
        var before = Chunks(data).ToHashSet();
        var after = Chunks(edited);
        var shared = after.Count(before.Contains);
        Assert.True(shared >= after.Count - 3, $"only {shared} of {after.Count} chunks survived a 100-byte insertion");
    }

    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public void FastCdc_resumed_past_a_chunk_known_to_be_at_least_so_long_cuts_where_a_search_from_the_start_does(int seed)
    {
        // A growing file's tail is searched again from where the last search ended (the data ended there). Random
        // data, long runs of one byte (no cut until the maximum) and text-like bytes; every prefix length that ends
        // the data, every resume point at or before the real cut.
        var random = new Random(seed);
        for (var round = 0; round < 40; round++)
        {
            var data = new byte[random.Next(1, FastCdc.MaxSize + 50_000)];
            switch (round % 3)
            {
                case 0:
                    random.NextBytes(data);
                    break;
                case 1:
                    data.AsSpan().Fill((byte)random.Next(256));
                    break;
                default:
                    for (var i = 0; i < data.Length; i++)
                    {
                        data[i] = (byte)"abc de\n"[random.Next(7)];
                    }

                    break;
            }

            for (var probe = 0; probe < 20; probe++)
            {
                var length = random.Next(1, data.Length + 1);
                var span = data.AsSpan(0, length);
                var cut = FastCdc.NextCut(span);
                var resumeAt = random.Next(0, cut + 1);
                Assert.Equal(cut, FastCdc.NextCut(span, resumeAt));
                Assert.Equal(cut, FastCdc.NextCut(span, cut));
            }
        }
    }

    private static List<int> Cuts(byte[] data)
    {
        var list = new List<int>();
        for (var pos = 0; pos < data.Length;)
        {
            var cut = FastCdc.NextCut(data.AsSpan(pos));
            list.Add(cut);
            pos += cut;
        }

        return list;
    }

    private static List<string> Chunks(byte[] data)
    {
        var list = new List<string>();
        var pos = 0;
        foreach (var cut in Cuts(data))
        {
            list.Add(BlobId.Of(data.AsSpan(pos, cut)).ToHex());
            pos += cut;
        }

        return list;
    }

    internal static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }
}
