using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage;

/// <summary>
/// Verify's check that the state of a session at every moment is one an export can write: what
/// <c>Materializer.Plan</c> refuses at one moment (an unsafe path, two entries for one output path, an entry below
/// a file or symlink) is looked for at all of them, by applying the versions in state order (seq, then id) and
/// checking each moment's changed paths against the state so far. Also checks that each path's versions have
/// non-decreasing seq in id order (the rule that makes "state at S" well defined) and that every version's path row
/// exists and lies in a root of its session. Memory: a few entries per path of the session.
/// </summary>
internal static class MomentCheck
{
    public static void Session(TraceReader reader, SessionInfo session, List<Damage> damages)
    {
        var roots = session.Roots.ToDictionary(r => r.Id, r => r.Path.Trim('/'));
        var multiRoot = session.Roots.Count > 1;
        var current = new Dictionary<long, (string Out, EntryKind Kind, long Id)>(); // present entries, by path row
        var owners = new Dictionary<string, (long PathId, EntryKind Kind)>(StringComparer.Ordinal);
        var below = new Dictionary<string, int>(StringComparer.Ordinal); // present strict descendants per output path
        var lastId = new Dictionary<long, long>();
        var changed = new List<(string Out, VersionOutline V)>();
        var badPaths = new HashSet<long>();
        long? moment = null;

        void Report(VersionOutline v, string path, string why)
        {
            if (badPaths.Add(v.PathId))
            {
                damages.Add(new Damage(session.Id, v.Id, v.Seq, path, null, why));
            }
        }

        void CheckMoment()
        {
            foreach (var (path, v) in changed)
            {
                if (!owners.TryGetValue(path, out var owner))
                {
                    continue;
                }

                if (owner.Kind != EntryKind.Directory && below.GetValueOrDefault(path) > 0)
                {
                    Report(v, path, $"after event #{v.Seq} entries lie below it, which is a {Kind(owner.Kind)} (export refuses that moment)");
                }

                for (var p = TracePath.Parent(path); p.Length > 0; p = TracePath.Parent(p))
                {
                    if (owners.TryGetValue(p, out var above) && above.Kind != EntryKind.Directory)
                    {
                        Report(v, path, $"after event #{v.Seq} it lies below '{p}', which is a {Kind(above.Kind)} (export refuses that moment)");
                        break;
                    }
                }
            }

            changed.Clear();
        }

        void Presence(string path, int delta)
        {
            for (var p = TracePath.Parent(path); p.Length > 0; p = TracePath.Parent(p))
            {
                below[p] = below.GetValueOrDefault(p) + delta;
            }
        }

        foreach (var v in reader.Outline(session))
        {
            if (moment != v.Seq)
            {
                CheckMoment();
                moment = v.Seq;
            }

            if (v.Rel is null || v.RootId is not { } rootId)
            {
                Report(v, $"path row {v.PathId}", $"version {v.Id} names path row {v.PathId}, which the catalog lacks");
                continue;
            }

            if (!roots.TryGetValue(rootId, out var root))
            {
                Report(v, v.Rel, $"its path lies in root {rootId}, which is not a root of session {session.Id}");
                continue;
            }

            var path = multiRoot && root.Length > 0 ? root + "/" + v.Rel : v.Rel;
            if (!TracePath.IsSafe(path))
            {
                Report(v, path, "its path would escape the output directory");
                continue;
            }

            if (lastId.TryGetValue(v.PathId, out var last) && last > v.Id)
            {
                Report(v, path, $"its versions are out of order: version {last} has a greater id and an earlier event");
            }

            lastId[v.PathId] = Math.Max(last, v.Id);
            if (current.TryGetValue(v.PathId, out var was))
            {
                if (was.Id > v.Id)
                {
                    continue; // the greater id stays the state (reported above)
                }

                current.Remove(v.PathId);
                owners.Remove(was.Out);
                Presence(was.Out, -1);
            }

            if (v.Kind == EntryKind.Absent)
            {
                continue;
            }

            if (owners.TryGetValue(path, out var other))
            {
                Report(v, path, $"after event #{v.Seq} another path row ({other.PathId}) gives the same output path");
                continue;
            }

            current[v.PathId] = (path, v.Kind, v.Id);
            owners[path] = (v.PathId, v.Kind);
            Presence(path, +1);
            changed.Add((path, v));
        }

        CheckMoment();
    }

    private static string Kind(EntryKind kind) => kind.ToString().ToLowerInvariant();
}
