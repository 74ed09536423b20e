namespace DiffKeeper.Core;

/// <summary>
/// Rules for the paths a trace stores: relative to their root, '/'-separated, no empty, '.' or '..' component,
/// no NUL. A trace is untrusted input, so every path read from a catalog goes through <see cref="Validate"/>.
/// </summary>
public static class TracePath
{
    /// <summary>
    /// A relative path of one or more names, none empty, "." or "..", and no NUL: it cannot leave the directory it is
    /// joined to. Walks the string once without cutting it (every path a maintenance pass or an export reads comes
    /// through here: a Split per path was a tenth of a `gc` pass over an untar's 35,000 versions).
    /// </summary>
    public static bool IsSafe(string path)
    {
        if (path.Length == 0 || path[0] == '/' || path.Contains('\0', StringComparison.Ordinal))
        {
            return false;
        }

        var span = path.AsSpan();
        while (true)
        {
            var slash = span.IndexOf('/');
            var part = slash < 0 ? span : span[..slash];
            if (part.IsEmpty || part is "." or "..")
            {
                return false;
            }

            if (slash < 0)
            {
                return true;
            }

            span = span[(slash + 1)..];
        }
    }

    public static string Validate(string path)
    {
        if (!IsSafe(path))
        {
            throw new DiffKeeperException(ExitCode.UnsafePath,
                $"the trace holds the path '{PathBytes.Display(path)}', which would escape the output directory; refusing to write it (the trace is damaged or was crafted)")
            { Path = path };
        }

        return path;
    }

    /// <summary>The parent of a relative path, or "" for a top-level name.</summary>
    public static string Parent(string path)
    {
        var i = path.LastIndexOf('/');
        return i < 0 ? "" : path[..i];
    }

    /// <summary>True when <paramref name="path"/> is <paramref name="ancestor"/> or lies below it.</summary>
    public static bool IsAtOrBelow(string path, string ancestor) =>
        ancestor.Length == 0 ||
        (path.StartsWith(ancestor, StringComparison.Ordinal) &&
         (path.Length == ancestor.Length || path[ancestor.Length] == '/'));
}
