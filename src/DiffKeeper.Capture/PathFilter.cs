using DiffKeeper.Core;

namespace DiffKeeper.Capture;

/// <summary>Decides which root-relative paths are recorded: not the trace directory, not --exclude matches.</summary>
public sealed class PathFilter
{
    private readonly IReadOnlyList<string> _roots;
    private readonly IReadOnlyList<Glob> _excludes;
    private readonly string _traceDir;

    public PathFilter(IReadOnlyList<string> roots, string traceDir, IReadOnlyList<Glob> excludes)
    {
        _roots = roots;
        _traceDir = traceDir.TrimEnd('/');
        _excludes = excludes;
    }

    public bool IsExcluded(int root, string rel)
    {
        if (rel.Length == 0)
        {
            return false;
        }

        var abs = _roots[root].TrimEnd('/') + "/" + rel;
        if (TracePath.IsAtOrBelow(abs, _traceDir))
        {
            return true;
        }

        foreach (var glob in _excludes)
        {
            if (glob.IsMatch(rel))
            {
                return true;
            }
        }

        return false;
    }
}
