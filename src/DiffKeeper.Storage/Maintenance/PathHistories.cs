using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// The versions of every logical path (a root's absolute path plus the relative path, across sessions), oldest
/// first: the unit that prune keeps versions of and that compaction chains deltas along.
/// </summary>
internal sealed class PathHistories
{
    private PathHistories(Dictionary<string, List<VersionRecord>> byPath, Dictionary<long, SessionInfo> sessions)
    {
        ByPath = byPath;
        Sessions = sessions;
    }

    public Dictionary<string, List<VersionRecord>> ByPath { get; }

    public Dictionary<long, SessionInfo> Sessions { get; }

    public static PathHistories Load(TraceReader reader)
    {
        var sessions = reader.Sessions().ToDictionary(s => s.Id);
        var roots = sessions.Values.SelectMany(s => s.Roots).ToDictionary(r => r.Id, r => r.Path);
        var byPath = new Dictionary<string, List<VersionRecord>>(StringComparer.Ordinal);
        foreach (var v in reader.AllVersions())
        {
            var key = (roots.TryGetValue(v.RootId, out var root) ? root : "?" + v.RootId) + "\0" + v.Rel;
            if (!byPath.TryGetValue(key, out var list))
            {
                byPath[key] = list = [];
            }

            list.Add(v);
        }

        return new PathHistories(byPath, sessions);
    }

    /// <summary>How a logical path is shown to a person: absolute.</summary>
    public static string Display(string key)
    {
        var split = key.IndexOf('\0', StringComparison.Ordinal);
        var root = key[..split];
        return (root.EndsWith('/') ? root : root + "/") + key[(split + 1)..];
    }

    /// <summary>Blob rows of the newest version of every path that is a file: they must stay whole.</summary>
    public HashSet<long> HeadBlobs()
    {
        var heads = new HashSet<long>();
        foreach (var versions in ByPath.Values)
        {
            if (versions[^1] is { Kind: EntryKind.File, Pruned: false, Extents: { } map } newest &&
                ExtentMap.TryDecode(map, newest.Size, out var extents))
            {
                heads.UnionWith(extents.Select(e => e.BlobRowId));
            }
        }

        return heads;
    }
}
