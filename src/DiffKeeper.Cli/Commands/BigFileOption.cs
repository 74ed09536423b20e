using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using DiffKeeper.Recording;

namespace DiffKeeper.Cli.Commands;

/// <summary>`--big-file SIZE` of `record` and `run`: a size in bytes with an optional K, M, G or T (powers of 1024).</summary>
internal static class BigFileOption
{
    public static Option<long> Create() => new("--big-file")
    {
        Description = "Files of at least SIZE (bytes, or with K, M, G: 512M, 1G) are stored as 64 KiB blocks: only data extents " +
            "are read, holes stay holes, and a new version stores only the changed blocks (default 64M)",
        HelpName = "SIZE",
        DefaultValueFactory = _ => BigFileVersions.DefaultThreshold,
        CustomParser = r => ParseSize(r, "--big-file"),
    };

    /// <summary>A size in bytes with an optional K, M, G or T (also `--max-trace-size`); an error names the option.</summary>
    public static long ParseSize(ArgumentResult r, string option)
    {
        var text = r.Tokens.Count == 0 ? "" : r.Tokens[^1].Value.Trim();
        var shift = text.Length == 0 ? 0 : char.ToUpperInvariant(text[^1]) switch { 'K' => 10, 'M' => 20, 'G' => 30, 'T' => 40, _ => 0 };
        var digits = shift == 0 ? text : text[..^1];
        if (long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 && n <= long.MaxValue >> shift)
        {
            return n << shift;
        }

        r.AddError($"{option} expects a size such as 64M, 1G or a number of bytes, got '{text}'");
        return 0;
    }
}
