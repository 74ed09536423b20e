using System.Text;
using System.Text.RegularExpressions;

namespace DiffKeeper.Core;

/// <summary>
/// A shell-style pattern for --exclude and --path: '*' matches within one name, '**' across names, '?' one
/// character. A pattern without '/' matches any single name in the path (like .gitignore); one with '/' matches
/// the whole root-relative path.
/// </summary>
public sealed class Glob
{
    private readonly Regex _regex;
    private readonly bool _anyName;

    public Glob(string pattern)
    {
        Pattern = pattern;
        var p = pattern.TrimEnd('/');
        _anyName = !p.Contains('/', StringComparison.Ordinal);
        var sb = new StringBuilder("^");
        for (var i = 0; i < p.Length; i++)
        {
            var c = p[i];
            if (c == '*' && i + 1 < p.Length && p[i + 1] == '*')
            {
                sb.Append(".*");
                i++;
                if (i + 1 < p.Length && p[i + 1] == '/')
                {
                    sb.Append("/?");
                    i++;
                }
            }
            else if (c == '*')
            {
                sb.Append("[^/]*");
            }
            else if (c == '?')
            {
                sb.Append("[^/]");
            }
            else
            {
                sb.Append(Regex.Escape(c.ToString()));
            }
        }

        sb.Append('$');
        _regex = new Regex(sb.ToString(), RegexOptions.CultureInvariant);
    }

    public string Pattern { get; }

    public bool IsMatch(string relativePath)
    {
        if (_regex.IsMatch(relativePath))
        {
            return true;
        }

        if (_anyName)
        {
            foreach (var name in relativePath.Split('/'))
            {
                if (_regex.IsMatch(name))
                {
                    return true;
                }
            }
        }

        return false;
    }
}
