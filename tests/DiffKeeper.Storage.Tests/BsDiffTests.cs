using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Tests;

public sealed class BsDiffTests
{
    public static TheoryData<string> Cases => [.. Pairs.Keys];

    private static readonly Dictionary<string, (byte[] Old, byte[] New)> Pairs = new()
    {
        ["both empty"] = ([], []),
        ["empty old"] = ([], CodecTests.RandomBytes(5_000, 1)),
        ["empty new"] = (CodecTests.RandomBytes(5_000, 2), []),
        ["one byte each"] = ([1], [2]),
        ["identical"] = (CodecTests.RandomBytes(100_000, 3), CodecTests.RandomBytes(100_000, 3)),
        ["unrelated random"] = (CodecTests.RandomBytes(50_000, 4), CodecTests.RandomBytes(60_000, 5)),
        ["10% rewritten in place"] = Rewritten(CodecTests.RandomBytes(200_000, 6), 0.10, seed: 7),
        ["insertions and deletions"] = InsertedAndDeleted(CodecTests.RandomBytes(300_000, 8), seed: 9),
        ["text with edited lines"] = EditedText(seed: 10),
        ["zeros with a few changes"] = ZerosWithChanges(),
        ["new is old twice"] = (CodecTests.RandomBytes(40_000, 11), [.. CodecTests.RandomBytes(40_000, 11), .. CodecTests.RandomBytes(40_000, 11)]),
        ["new is a slice of old"] = (CodecTests.RandomBytes(40_000, 12), CodecTests.RandomBytes(40_000, 12)[1_000..30_000]),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Round_trips(string name)
    {
        var (old, updated) = Pairs[name];
        var patch = BsDiff.Diff(old, updated);
        Assert.Equal(updated, BsDiff.Patch(old, patch, updated.Length));
    }

    [Fact]
    public void A_small_edit_costs_about_the_edited_bytes()
    {
        var (old, updated) = Rewritten(CodecTests.RandomBytes(1 << 20, 20), 0.01, seed: 21);
        var patch = BsDiff.Diff(old, updated);
        Assert.True(patch.Length < 12_000, $"a 1% rewrite of 1 MiB took {patch.Length} bytes");

        var (oldText, newText) = EditedText(seed: 22);
        var textPatch = BsDiff.Diff(oldText, newText);
        Assert.True(textPatch.Length < newText.Length / 20, $"edited text: {textPatch.Length} of {newText.Length} bytes");
    }

    [Fact]
    public void Repetitive_input_is_not_quadratic()
    {
        // Long runs make every scan position a long match; the scan must skip over them.
        var old = new byte[4 << 20];
        var updated = new byte[4 << 20];
        for (var i = 0; i < updated.Length; i += 100_003)
        {
            updated[i] = 1;
        }

        var watch = Stopwatch.StartNew();
        var patch = BsDiff.Diff(old, updated);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(20), $"took {watch.Elapsed}");
        Assert.Equal(updated, BsDiff.Patch(old, patch, updated.Length));
    }

    [Fact]
    public void The_header_is_as_documented()
    {
        var (old, updated) = Rewritten(CodecTests.RandomBytes(10_000, 30), 0.1, seed: 31);
        var patch = BsDiff.Diff(old, updated);
        Assert.Equal("DKBS"u8.ToArray(), patch[..4]);
        Assert.Equal(1, patch[4]);
        Assert.Equal(0, patch[5] & ~7);
        Assert.Equal(updated.Length, BinaryPrimitives.ReadInt32LittleEndian(patch.AsSpan(8)));
        var stored = 0L;
        for (var s = 0; s < 3; s++)
        {
            stored += BinaryPrimitives.ReadUInt32LittleEndian(patch.AsSpan(16 + (8 * s)));
        }

        Assert.Equal(patch.Length, BsDiff.HeaderSize + stored);
        Assert.Equal(updated.Length, BinaryPrimitives.ReadInt32LittleEndian(patch.AsSpan(20)) + BinaryPrimitives.ReadInt32LittleEndian(patch.AsSpan(28)));
    }

    [Fact]
    public void A_wrong_expected_length_or_old_is_rejected()
    {
        var (old, updated) = Rewritten(CodecTests.RandomBytes(20_000, 40), 0.1, seed: 41);
        var patch = BsDiff.Diff(old, updated);
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(old, patch, updated.Length + 1));
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(old, patch, updated.Length - 1));
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(old.AsSpan(0, 1_000), patch, updated.Length));
        Assert.False(BsDiff.TryPatch([], patch, new byte[updated.Length], out var error));
        Assert.Contains("old", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Damaged_patches_are_rejected_or_decode_to_the_expected_length_never_anything_else()
    {
        var (old, updated) = InsertedAndDeleted(CodecTests.RandomBytes(30_000, 50), seed: 51);
        var patch = BsDiff.Diff(old, updated);
        var random = new Random(52);

        // Every truncation and every flipped header bit is caught.
        for (var round = 0; round < 200; round++)
        {
            Assert.False(BsDiff.TryPatch(old, patch.AsSpan(0, random.Next(patch.Length)), new byte[updated.Length], out _));
        }

        for (var bit = 0; bit < BsDiff.HeaderSize * 8; bit++)
        {
            var damaged = (byte[])patch.Clone();
            damaged[bit / 8] ^= (byte)(1 << (bit % 8));
            Assert.Throws<InvalidDataException>(() => BsDiff.Patch(old, damaged, updated.Length));
        }

        // Damage in the streams is caught when it breaks a zstd frame or a control triple; bytes changed inside
        // a raw stream or a zstd literal decode to other bytes of the right length (the pack record's CRC-32C
        // and SHA-256 catch those). Never another exception, never out of range.
        var rejected = 0;
        for (var round = 0; round < 400; round++)
        {
            var damaged = (byte[])patch.Clone();
            if (round % 2 == 0)
            {
                var bit = random.Next(BsDiff.HeaderSize * 8, damaged.Length * 8);
                damaged[bit / 8] ^= (byte)(1 << (bit % 8));
            }
            else
            {
                var at = random.Next(BsDiff.HeaderSize, damaged.Length);
                random.NextBytes(damaged.AsSpan(at, Math.Min(damaged.Length - at, random.Next(1, 16))));
            }

            try
            {
                Assert.Equal(updated.Length, BsDiff.Patch(old, damaged, updated.Length).Length);
            }
            catch (InvalidDataException e)
            {
                Assert.Contains("bsdiff patch", e.Message, StringComparison.Ordinal);
                rejected++;
            }
        }

        Assert.InRange(rejected, 1, 400);
    }

    [Theory]
    [InlineData("seek before the old bytes", new byte[] { 0x01, 0x01, 0x00 }, 1, 0)]
    [InlineData("add past the old bytes", new byte[] { 0x00, 0x0B, 0x00 }, 11, 0)]
    [InlineData("add more than the diff stream", new byte[] { 0x00, 0x02, 0x00 }, 1, 1)]
    [InlineData("a triple that outputs nothing", new byte[] { 0x00, 0x00, 0x00, 0x00, 0x01, 0x00 }, 1, 0)]
    [InlineData("a truncated varint", new byte[] { 0x00, 0x81 }, 1, 0)]
    [InlineData("an overlong varint", new byte[] { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01, 0x00 }, 1, 0)]
    [InlineData("too few bytes produced", new byte[] { 0x00, 0x01, 0x00 }, 2, 0)]
    public void Hostile_control_triples_are_rejected(string what, byte[] control, int diffLength, int extraLength)
    {
        var old = new byte[10];
        var patch = RawPatch(control, new byte[diffLength], new byte[extraLength]);
        var e = Assert.Throws<InvalidDataException>(() => BsDiff.Patch(old, patch, diffLength + extraLength));
        Assert.False(string.IsNullOrEmpty(e.Message), what);
    }

    [Fact]
    public void Hostile_headers_are_rejected_before_allocating()
    {
        var good = RawPatch([0x00, 0x01, 0x00], [7], []);
        Assert.Equal([7], BsDiff.Patch(new byte[1], good, 1));

        var huge = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(huge.AsSpan(12), uint.MaxValue); // control raw length
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], huge, 1));

        var lying = (byte[])good.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(lying.AsSpan(8), 1 << 30); // new length
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], lying, 1));

        var magic = (byte[])good.Clone();
        magic[0] = (byte)'X';
        Assert.Contains("magic", Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], magic, 1)).Message, StringComparison.Ordinal);

        var version = (byte[])good.Clone();
        version[4] = 2;
        Assert.Contains("version", Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], version, 1)).Message, StringComparison.Ordinal);

        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], [.. good, 0], 1));
        Assert.Throws<InvalidDataException>(() => BsDiff.Patch(new byte[1], [], 1));
    }

    // A patch with raw (uncompressed) streams, written independently of the encoder.
    internal static byte[] RawPatch(byte[] control, byte[] diff, byte[] extra)
    {
        var patch = new byte[BsDiff.HeaderSize + control.Length + diff.Length + extra.Length];
        "DKBS"u8.CopyTo(patch);
        patch[4] = 1;
        BinaryPrimitives.WriteInt32LittleEndian(patch.AsSpan(8), diff.Length + extra.Length);
        var at = 12;
        foreach (var stream in new[] { control, diff, extra })
        {
            BinaryPrimitives.WriteInt32LittleEndian(patch.AsSpan(at), stream.Length);
            BinaryPrimitives.WriteInt32LittleEndian(patch.AsSpan(at + 4), stream.Length);
            at += 8;
        }

        byte[] body = [.. control, .. diff, .. extra];
        body.CopyTo(patch, BsDiff.HeaderSize);
        return patch;
    }

    internal static (byte[] Old, byte[] New) Rewritten(byte[] old, double fraction, int seed)
    {
        var random = new Random(seed);
        var updated = (byte[])old.Clone();
        var regions = 10;
        var stripe = old.Length / regions;
        var length = (int)(old.Length * fraction / regions);
        for (var r = 0; r < regions; r++)
        {
            random.NextBytes(updated.AsSpan((r * stripe) + random.Next(stripe - length), length));
        }

        return (old, updated);
    }

    private static (byte[] Old, byte[] New) InsertedAndDeleted(byte[] old, int seed)
    {
        var random = new Random(seed);
        var list = new List<byte>(old);
        for (var k = 0; k < 20; k++)
        {
            var at = random.Next(list.Count);
            if (k % 2 == 0)
            {
                list.InsertRange(at, CodecTests.RandomBytes(random.Next(1, 5_000), seed + k));
            }
            else
            {
                list.RemoveRange(at, Math.Min(list.Count - at, random.Next(1, 5_000)));
            }
        }

        return (old, list.ToArray());
    }

    private static (byte[] Old, byte[] New) EditedText(int seed)
    {
        var random = new Random(seed);
        string[] words = ["var", "int", "return", "if", "else", "foreach", "string", "count", "value", "(", ")", "{", "}", ";", "=", "+", "list", "index"];
        var lines = new List<string>();
        for (var i = 0; i < 5_000; i++)
        {
            var n = random.Next(2, 12);
            lines.Add(new string(' ', 4 * random.Next(4)) + string.Join(' ', Enumerable.Range(0, n).Select(_ => words[random.Next(words.Length)])));
        }

        var old = Encoding.UTF8.GetBytes(string.Join('\n', lines));
        for (var k = 0; k < 60; k++)
        {
            var at = random.Next(lines.Count);
            switch (k % 3)
            {
                case 0: lines[at] = lines[at] + " // edited " + k; break;
                case 1: lines.Insert(at, "    // a new line " + k); break;
                default: lines.RemoveAt(at); break;
            }
        }

        return (old, Encoding.UTF8.GetBytes(string.Join('\n', lines)));
    }

    private static (byte[] Old, byte[] New) ZerosWithChanges()
    {
        var old = new byte[300_000];
        var updated = new byte[310_000];
        updated[1] = 9;
        updated[150_000] = 3;
        CodecTests.RandomBytes(5_000, 60).CopyTo(updated, 200_000);
        return (old, updated);
    }
}
