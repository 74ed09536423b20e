using DiffKeeper.Core;

namespace DiffKeeper.Cli;

/// <summary>
/// The command line with every argument's exact bytes. The runtime decodes argv as UTF-8 and replaces what is not
/// (a directory named <c>bad\xffdir</c> arrives as <c>bad\uFFFDdir</c>, which names nothing); /proc/self/cmdline
/// still holds the bytes, and <see cref="PathBytes"/> carries them in the string (escaped), so <c>--watch</c>,
/// <c>--out</c> and the recorded command's own arguments get them back.
/// </summary>
internal static class RawArguments
{
    public static string[] Recover(string[] args)
    {
        if (!args.Any(a => a.Contains('\uFFFD', StringComparison.Ordinal)))
        {
            return args; // the usual case: nothing was replaced, nothing is read
        }

        byte[] cmdline;
        try
        {
            cmdline = File.ReadAllBytes("/proc/self/cmdline");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return args;
        }

        var raw = new List<byte[]>();
        var span = cmdline.AsSpan();
        while (!span.IsEmpty)
        {
            var nul = span.IndexOf((byte)0);
            raw.Add((nul < 0 ? span : span[..nul]).ToArray());
            span = nul < 0 ? [] : span[(nul + 1)..];
        }

        if (raw.Count != args.Length + 1)
        {
            return args; // not the argv the runtime saw (it never differs on Linux; be safe)
        }

        return [.. args.Select((a, i) => a.Contains('\uFFFD', StringComparison.Ordinal) ? PathBytes.Decode(raw[i + 1]) : a)];
    }
}
