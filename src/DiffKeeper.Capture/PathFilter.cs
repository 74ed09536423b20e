using DiffKeeper.Core;

namespace DiffKeeper.Capture;

/// <summary>Decides which root-relative paths are recorded: not the trace directory, not --exclude matches.</summary>
public sealed class PathFilter
{
    private readonly IReadOnlyList<Glob> _excludes;

    // Per root, the trace directory relative to it: "" when the root is at or below the trace directory (everything
    // under it is excluded), null when the two are apart. Asked once per event of every backend, so it is decided
    // here once instead of joining the root and the path into a new string per call.
    private readonly string?[] _traceRel;

    public PathFilter(IReadOnlyList<string> roots, string traceDir, IReadOnlyList<Glob> excludes)
    {
        var trace = traceDir.TrimEnd('/');
        _excludes = excludes;
        _traceRel = new string?[roots.Count];
        for (var i = 0; i < roots.Count; i++)
        {
            var root = roots[i].TrimEnd('/');
            _traceRel[i] = TracePath.IsAtOrBelow(root, trace) ? ""
                : TracePath.IsAtOrBelow(trace, root) ? trace[(root.Length + 1)..]
                : null;
        }
    }

    public bool IsExcluded(int root, string rel)
    {
        if (rel.Length == 0)
        {
            return false;
        }

        if (_traceRel[root] is { } trace && TracePath.IsAtOrBelow(rel, trace))
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
