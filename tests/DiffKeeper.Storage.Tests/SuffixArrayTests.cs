using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Tests;

public sealed class SuffixArrayTests
{
    [Theory]
    [InlineData("")]
    [InlineData("a")]
    [InlineData("aa")]
    [InlineData("ab")]
    [InlineData("ba")]
    [InlineData("banana")]
    [InlineData("mississippi")]
    [InlineData("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab")]
    [InlineData("abababababababababababababababababababababababa")]
    [InlineData("abcabcabcabcabdabcabcabcabcabcabcabdabcabc")]
    public void Sorts_classic_strings_like_a_naive_sort(string text)
    {
        var bytes = System.Text.Encoding.ASCII.GetBytes(text);
        Assert.Equal(Naive(bytes), SuffixArray.Build(bytes));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(256)]
    public void Sorts_random_texts_over_small_and_full_alphabets_like_a_naive_sort(int alphabet)
    {
        var random = new Random(alphabet);
        for (var round = 0; round < 200; round++)
        {
            var bytes = new byte[random.Next(0, 400)];
            for (var i = 0; i < bytes.Length; i++)
            {
                bytes[i] = (byte)random.Next(alphabet);
            }

            Assert.Equal(Naive(bytes), SuffixArray.Build(bytes));
        }
    }

    [Fact]
    public void Sorts_a_mebibyte_of_mixed_data()
    {
        // Random bytes, a long run and a repeated block: deep recursion and long common prefixes.
        var data = CodecTests.RandomBytes(1 << 20, seed: 5);
        data.AsSpan(100_000, 50_000).Clear();
        data.AsSpan(300_000, 100_000).CopyTo(data.AsSpan(700_000));
        var sa = SuffixArray.Build(data);
        var seen = new bool[data.Length];
        foreach (var p in sa)
        {
            Assert.False(seen[p]);
            seen[p] = true;
        }

        for (var i = 1; i < sa.Length; i++)
        {
            Assert.True(data.AsSpan(sa[i - 1]).SequenceCompareTo(data.AsSpan(sa[i])) < 0, $"suffixes {sa[i - 1]} and {sa[i]} out of order");
        }
    }

    private static int[] Naive(byte[] bytes)
    {
        var sa = Enumerable.Range(0, bytes.Length).ToArray();
        Array.Sort(sa, (a, b) => bytes.AsSpan(a).SequenceCompareTo(bytes.AsSpan(b)));
        return sa;
    }
}
