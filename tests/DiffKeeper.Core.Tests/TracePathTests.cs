using DiffKeeper.Core;

namespace DiffKeeper.Core.Tests;

public sealed class TracePathTests
{
    [Theory]
    [InlineData("a")]
    [InlineData("a/b/c.txt")]
    [InlineData("..a/b..")]
    [InlineData(".hidden")]
    [InlineData("a/.../b")]
    [InlineData("a/.b/..c")]
    public void Safe_paths(string path) => Assert.True(TracePath.IsSafe(path));

    [Theory]
    [InlineData("")]
    [InlineData("/etc/passwd")]
    [InlineData("../x")]
    [InlineData("a/../../x")]
    [InlineData("a/..")]
    [InlineData("./a")]
    [InlineData("a//b")]
    [InlineData("a/")]
    [InlineData("a\0b")]
    [InlineData(".")]
    [InlineData("..")]
    [InlineData("a/.")]
    [InlineData("a/./b")]
    [InlineData("/")]
    public void Unsafe_paths_are_refused_with_exit_code_7(string path)
    {
        Assert.False(TracePath.IsSafe(path));
        var e = Assert.Throws<DiffKeeperException>(() => TracePath.Validate(path));
        Assert.Equal(ExitCode.UnsafePath, e.Code);
    }

    [Theory]
    [InlineData("a/b", "a", true)]
    [InlineData("a", "a", true)]
    [InlineData("ab", "a", false)]
    [InlineData("x", "", true)]
    public void Ancestry(string path, string ancestor, bool expected) =>
        Assert.Equal(expected, TracePath.IsAtOrBelow(path, ancestor));
}
