namespace DiffKeeper.Cli.Remote;

/// <summary>
/// The options of a command line that may name a remote store (<c>--trace</c>/<c>--state-dir</c>, <c>--store</c>,
/// <c>--session</c>), found and replaced in place; nothing after <c>--</c> (the recorded command's arguments) is touched.
/// </summary>
internal sealed class RemoteArguments
{
    private readonly List<string> _args;

    public RemoteArguments(string[] args) => _args = [.. args];

    private int End => _args.IndexOf("--") is var dashes and >= 0 ? dashes : _args.Count;

    public string? Command => _args.Count > 0 && !_args[0].StartsWith('-') ? _args[0] : null;

    /// <summary>The value of the first of <paramref name="names"/> given, as "--name value" or "--name=value".</summary>
    public string? Value(params string[] names) => Find(names) is { } at ? at.Value : null;

    public bool Has(string name) => Find([name]) is not null;

    /// <summary>Sets an option's value where it was given, or adds it before the command's own arguments.</summary>
    public void Set(string[] names, string value)
    {
        if (Find(names) is { } at)
        {
            if (at.Inline)
            {
                _args[at.Index] = names.First(n => _args[at.Index].StartsWith(n + "=", StringComparison.Ordinal)) + "=" + value;
            }
            else
            {
                _args[at.Index + 1] = value;
            }

            return;
        }

        _args.Insert(1, value);
        _args.Insert(1, names[0]);
    }

    /// <summary>Removes an option of ours that the local command does not know; returns its value.</summary>
    public string? Remove(string name)
    {
        if (Find([name]) is not { } at)
        {
            return null;
        }

        _args.RemoveRange(at.Index, at.Inline ? 1 : 2);
        return at.Value;
    }

    public string[] ToArray() => [.. _args];

    private (int Index, bool Inline, string Value)? Find(string[] names)
    {
        var end = End;
        for (var i = 1; i < end; i++)
        {
            foreach (var n in names)
            {
                if (_args[i] == n && i + 1 < end)
                {
                    return (i, false, _args[i + 1]);
                }

                if (_args[i].StartsWith(n + "=", StringComparison.Ordinal))
                {
                    return (i, true, _args[i][(n.Length + 1)..]);
                }
            }
        }

        return null;
    }
}
