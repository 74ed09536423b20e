using DiffKeeper.Core;

namespace DiffKeeper.Core.Tests;

public sealed class PathKeyComparerTests
{
    private static readonly PathKeyComparer Comparer = PathKeyComparer.Instance;

    [Fact]
    public void Equal_keys_hash_alike_whatever_the_string_instance()
    {
        var random = new Random(7);
        for (var i = 0; i < 5000; i++)
        {
            var rel = new string(Enumerable.Range(0, random.Next(0, 40)).Select(_ => (char)random.Next(1, 0x3000)).ToArray());
            var copy = new string(rel.AsSpan());
            var root = random.Next(0, 4);
            Assert.True(Comparer.Equals((root, rel), (root, copy)));
            Assert.Equal(Comparer.GetHashCode((root, rel)), Comparer.GetHashCode((root, copy)));
            Assert.Equal(Comparer.GetHashCode(((long)root, rel)), Comparer.GetHashCode(((long)root, copy)));
        }
    }

    [Theory]
    [InlineData(0, "a", 1, "a")]
    [InlineData(0, "a", 0, "b")]
    [InlineData(0, "abcdefgh", 0, "abcdefgi")]
    [InlineData(0, "dir/f000001.txt", 0, "dir/f000002.txt")]
    [InlineData(0, "", 0, "\0")]
    public void Different_keys_are_not_equal(int rootA, string a, int rootB, string b)
    {
        Assert.False(Comparer.Equals((rootA, a), (rootB, b)));
        Assert.False(Comparer.Equals(((long)rootA, a), ((long)rootB, b)));
    }

    [Fact]
    public void Names_that_differ_by_one_character_spread_over_the_buckets()
    {
        // tar's and a build's names: a shared prefix and a counter. A weak hash would pile them into a few buckets.
        var hashes = Enumerable.Range(0, 100_000).Select(i => Comparer.GetHashCode((0, $"include/linux/f{i:D6}.h"))).ToList();
        Assert.True(hashes.Distinct().Count() > 99_900);
        var buckets = hashes.GroupBy(h => (uint)h % 1021).Select(g => g.Count()).ToList();
        Assert.Equal(1021, buckets.Count);
        Assert.True(buckets.Max() < 2 * 100_000 / 1021, $"fullest bucket {buckets.Max()}");
    }
}
