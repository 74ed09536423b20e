using System.Text;
using DiffKeeper.Core;

namespace DiffKeeper.Core.Tests;

public sealed class PathBytesTests
{
    private static byte[] B(params int[] bytes) => bytes.Select(b => (byte)b).ToArray();

    [Fact]
    public void Random_byte_strings_round_trip_exactly_and_their_display_form_parses_back()
    {
        // Fixed seed; every length up to 24 and bytes biased to the interesting ranges (ASCII, continuation, lead, 0xF0+).
        var random = new Random(20261206);
        int[] pool = [.. Enumerable.Range(1, 0x7F), 0x80, 0x8F, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFE, 0xFF];
        for (var i = 0; i < 20_000; i++)
        {
            var bytes = Enumerable.Range(0, random.Next(1, 25)).Select(_ => (byte)pool[random.Next(pool.Length)]).ToArray();
            var path = PathBytes.Decode(bytes);
            Assert.Equal(bytes, PathBytes.Encode(path));
            Assert.Equal(!System.Text.Unicode.Utf8.IsValid(bytes), PathBytes.HasRawBytes(path));
            var display = PathBytes.Display(path);
            Assert.DoesNotContain(display, c => char.IsControl(c) || char.IsSurrogate(c) && !char.IsSurrogatePair(display, display.IndexOf(c, StringComparison.Ordinal)));
            Assert.Equal(path, PathBytes.ParseDisplay(display) ?? display);
        }
    }

    [Fact]
    public void UTF8_names_are_the_same_text_as_always()
    {
        foreach (var name in new[] { "a", "x y", "été", "n\nl", "日本語", "🙂/b" })
        {
            var bytes = Encoding.UTF8.GetBytes(name);
            Assert.Equal(name, PathBytes.Decode(bytes));
            Assert.Equal(bytes, PathBytes.Encode(name));
            Assert.False(PathBytes.HasRawBytes(name));
        }
    }

    [Theory]
    [InlineData(new byte[] { (byte)'b', (byte)'a', (byte)'d', 0xFF, (byte)'b', (byte)'y', (byte)'t', (byte)'e' }, @"bad\xffbyte")]
    [InlineData(new byte[] { (byte)'d', 0x80, (byte)'i', (byte)'r', (byte)'/', (byte)'f' }, @"d\x80ir/f")]
    [InlineData(new byte[] { (byte)'n', (byte)'\n', (byte)'l', (byte)'\\', (byte)'\t', 0x1B }, @"n\nl\\\t\x1b")]
    [InlineData(new byte[] { 0xC3, 0xA9, 0xED, 0xB2, 0x80 }, @"é\xed\xb2\x80")] // an encoded surrogate is not UTF-8
    [InlineData(new byte[] { 0xC2, 0x9B, (byte)'x' }, @"\xc2\x9bx")] // a C1 control (CSI) is escaped
    public void Display_escapes_what_a_terminal_would_misread(byte[] bytes, string display)
    {
        var path = PathBytes.Decode(bytes);
        Assert.Equal(display, PathBytes.Display(path));
        Assert.Equal(path, PathBytes.ParseDisplay(display));
        Assert.Equal(bytes, PathBytes.Encode(path));
    }

    [Fact]
    public void A_display_string_without_escapes_is_the_path_itself_and_a_broken_one_is_refused()
    {
        Assert.Null(PathBytes.ParseDisplay("plain/été"));
        Assert.Null(PathBytes.ParseDisplay(@"trailing\"));
        Assert.Null(PathBytes.ParseDisplay(@"bad\q"));
        Assert.Null(PathBytes.ParseDisplay(@"short\xf"));
        Assert.Equal(B(0xFF), PathBytes.Encode(PathBytes.ParseDisplay(@"\xff")!));
    }
}
