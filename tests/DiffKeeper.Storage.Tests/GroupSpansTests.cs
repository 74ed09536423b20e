using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Storage.Tests;

/// <summary><see cref="GroupSpans"/> against a byte-by-byte count, on random spans shaped as groups hold them and not.</summary>
public sealed class GroupSpansTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Covered_and_own_bytes_agree_with_counting_every_byte(int seed)
    {
        var rng = new Random(seed);
        for (var round = 0; round < 300; round++)
        {
            var spans = new List<(long Start, int Length)>();
            var n = rng.Next(0, 12);
            for (var i = 0; i < n; i++)
            {
                // Chains (one start, growing lengths), disjoint members, touching and crossing spans, empty ones.
                var start = rng.Next(3) == 0 && spans.Count > 0 ? spans[^1].Start : rng.Next(0, 200);
                spans.Add((start, rng.Next(0, 60)));
            }

            var count = new int[300];
            foreach (var (start, length) in spans)
            {
                for (var b = start; b < start + length; b++)
                {
                    count[b]++;
                }
            }

            Assert.Equal(count.Count(c => c > 0), GroupSpans.Covered(spans));
            var own = GroupSpans.Own(spans);
            for (var i = 0; i < spans.Count; i++)
            {
                var alone = 0;
                for (var b = spans[i].Start; b < spans[i].Start + spans[i].Length; b++)
                {
                    alone += count[b] == 1 ? 1 : 0;
                }

                Assert.Equal(alone, own[i]);
            }
        }
    }

    [Fact]
    public void The_shorter_states_of_a_grown_file_own_nothing()
    {
        var own = GroupSpans.Own([(100, 16), (100, 32), (100, 48), (0, 100)]);
        Assert.Equal([0L, 0L, 16L, 100L], own);
        Assert.Equal(148, GroupSpans.Covered([(100, 16), (100, 32), (100, 48), (0, 100)]));
    }
}
