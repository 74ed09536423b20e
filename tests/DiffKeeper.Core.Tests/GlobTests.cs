using DiffKeeper.Core;

namespace DiffKeeper.Core.Tests;

public sealed class GlobTests
{
    [Theory]
    [InlineData("*.log", "status.log", true)]
    [InlineData("*.log", "deep/dir/status.log", true)]
    [InlineData("*.log", "status.log.1", false)]
    [InlineData("node_modules", "a/node_modules/x/y.js", true)]
    [InlineData("build/*.o", "build/a.o", true)]
    [InlineData("build/*.o", "build/sub/a.o", false)]
    [InlineData("build/**/*.o", "build/sub/deeper/a.o", true)]
    [InlineData("build/**", "build/x", true)]
    [InlineData("?.txt", "a.txt", true)]
    [InlineData("?.txt", "ab.txt", false)]
    public void Matches(string pattern, string path, bool expected) =>
        Assert.Equal(expected, new Glob(pattern).IsMatch(path));
}
