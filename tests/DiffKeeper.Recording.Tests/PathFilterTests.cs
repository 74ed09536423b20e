using DiffKeeper.Capture;
using DiffKeeper.Core;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The filter decides the trace directory's exclusion per root once; every answer must be the one a join of the root
/// and the path, tested against the trace directory, gives (what it did before, one string per event).
/// </summary>
public sealed class PathFilterTests
{
    private static readonly string[] Names = ["a", "b", "ab", "tr", "tr2", "t", "x y", "é"];

    [Fact]
    public void The_trace_directory_is_excluded_as_a_join_of_root_and_path_would_say()
    {
        var random = new Random(20261207);
        string RandomPath(int max)
        {
            var depth = random.Next(0, max + 1);
            return string.Join('/', Enumerable.Range(0, depth).Select(_ => Names[random.Next(Names.Length)]));
        }

        for (var round = 0; round < 2000; round++)
        {
            // Roots and trace directories from a few names, so they nest, coincide and share prefixes ("t", "tr",
            // "tr2"); some with a trailing slash, some the file system's root.
            var roots = Enumerable.Range(0, random.Next(1, 4))
                .Select(_ => "/" + RandomPath(3) is var r && r != "/" && random.Next(4) == 0 ? r + "/" : r)
                .ToList();
            var trace = "/" + RandomPath(4) + (random.Next(4) == 0 ? "/" : "");
            var filter = new PathFilter(roots, trace, []);
            for (var probe = 0; probe < 20; probe++)
            {
                var root = random.Next(roots.Count);
                var rel = RandomPath(5);
                var joined = roots[root].TrimEnd('/') + "/" + rel;
                var expected = rel.Length > 0 && TracePath.IsAtOrBelow(joined, trace.TrimEnd('/'));
                Assert.True(expected == filter.IsExcluded(root, rel), $"roots [{string.Join(", ", roots)}], trace {trace}, root {root}, rel {rel}: expected {expected}");
            }
        }
    }

    [Theory]
    [InlineData("/w", "/w/.dk", ".dk", true)]
    [InlineData("/w", "/w/.dk", ".dk/catalog", true)]
    [InlineData("/w", "/w/.dk", ".dkx", false)]
    [InlineData("/w", "/w", "any", true)]
    [InlineData("/w/sub", "/w", "any", true)]
    [InlineData("/w", "/elsewhere", ".dk", false)]
    [InlineData("/", "/tmp/tr", "tmp/tr/x", true)]
    [InlineData("/", "/tmp/tr", "tmp/trx", false)]
    [InlineData("/w/", "/w/tr/", "tr", true)]
    public void Cases(string root, string trace, string rel, bool excluded) =>
        Assert.Equal(excluded, new PathFilter([root], trace, []).IsExcluded(0, rel));

    [Fact]
    public void Excludes_still_apply() =>
        Assert.True(new PathFilter(["/w"], "/t", [new Glob("*.log")]).IsExcluded(0, "x.log"));
}
