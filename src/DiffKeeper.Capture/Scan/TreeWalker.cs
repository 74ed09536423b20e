using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Capture.Scan;

/// <summary>
/// Walks a root depth-first without following symlinks, parents before children, and yields every entry that the
/// filter keeps (the root itself is not yielded). Entries that vanish during the walk are skipped.
/// </summary>
public static class TreeWalker
{
    public static IEnumerable<(string Rel, EntryStat Stat)> Walk(string root, int rootIndex, PathFilter filter, string startRel = "")
    {
        var pending = new Stack<string>();
        pending.Push(startRel);
        while (pending.Count > 0)
        {
            var dirRel = pending.Pop();
            var dirAbs = Join(root, dirRel);
            // Listed and stat'ed through one descriptor: names are raw bytes (any that are not UTF-8 are kept,
            // PathBytes), each entry is stat'ed relative to the directory (one name looked up, not the whole path),
            // and a directory deeper than PATH_MAX is opened in pieces (LongPath). Below the root the directory is
            // opened without following a symlink: it was a directory when its parent was listed, and one replaced
            // by a symlink since is not walked into (as lstat of each child would not).
            var dirFd = LongPath.OpenDirectory(dirAbs, Libc.O_RDONLY | (dirRel.Length == 0 ? 0 : Libc.O_NOFOLLOW));
            if (dirFd < 0)
            {
                continue; // gone, replaced or unreadable since it was listed: its parent's events tell what happened
            }

            var list = LongPath.List(dirFd);
            if (list is null)
            {
                Libc.Close(dirFd);
                continue;
            }

            var names = list.ToArray();
            Array.Sort(names, StringComparer.Ordinal);
            var subdirs = new List<string>();
            try
            {
                foreach (var name in names)
                {
                    var rel = dirRel.Length == 0 ? name : dirRel + "/" + name;
                    if (filter.IsExcluded(rootIndex, rel))
                    {
                        continue;
                    }

                    EntryStat? stat;
                    try
                    {
                        stat = EntryStat.LstatAt(dirFd, name, dirAbs);
                    }
                    catch (IOException)
                    {
                        continue; // not searchable: nothing below can be recorded either
                    }

                    if (stat is null || stat.Value.Kind is null)
                    {
                        continue;
                    }

                    yield return (rel, stat.Value);
                    if (stat.Value.Kind == Core.EntryKind.Directory)
                    {
                        subdirs.Add(rel);
                    }
                }
            }
            finally
            {
                Libc.Close(dirFd);
            }

            for (var i = subdirs.Count - 1; i >= 0; i--)
            {
                pending.Push(subdirs[i]);
            }
        }
    }

    public static string Join(string root, string rel) =>
        rel.Length == 0 ? root : root.EndsWith('/') ? root + rel : root + "/" + rel;
}
