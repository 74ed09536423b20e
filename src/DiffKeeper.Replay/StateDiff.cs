using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Replay;

/// <summary>
/// Compares two states (each as <see cref="Materializer.Plan"/> gives it: output-relative paths, sorted) path by
/// path. What counts: presence, kind, permission bits, symlink target, file content. Modification times and
/// owners do not (a file touched but not changed is the same, as for diff -r).
/// </summary>
public static class StateDiff
{
    public static List<EntryChange> Compare(
        List<(string Path, VersionRecord Version)> before, List<(string Path, VersionRecord Version)> after, Func<string, bool>? include = null)
    {
        var changes = new List<EntryChange>();
        int i = 0, j = 0;
        while (i < before.Count || j < after.Count)
        {
            var order = i == before.Count ? 1 : j == after.Count ? -1 : string.CompareOrdinal(before[i].Path, after[j].Path);
            var change = order < 0 ? new EntryChange(before[i].Path, before[i++].Version, null)
                : order > 0 ? new EntryChange(after[j].Path, null, after[j++].Version)
                : new EntryChange(before[i].Path, before[i++].Version, after[j++].Version);
            if (include is not null && !include(change.Path))
            {
                continue;
            }

            if (change.Change != "changed" || change.KindChanged || change.ModeChanged || change.TargetChanged || change.ContentMayDiffer)
            {
                changes.Add(change);
            }
        }

        return changes;
    }
}
