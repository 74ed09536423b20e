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
            (string Rel, EntryStat? Stat)[] entries;
            try
            {
                entries = StatAll(dirFd, dirAbs, dirRel, names, rootIndex, filter);
            }
            finally
            {
                Libc.Close(dirFd);
            }

            foreach (var (rel, stat) in entries)
            {
                if (stat is not { Kind: not null } st)
                {
                    continue; // excluded, vanished, or not searchable (nothing below could be recorded either)
                }

                yield return (rel, st);
                if (st.Kind == Core.EntryKind.Directory)
                {
                    subdirs.Add(rel);
                }
            }

            for (var i = subdirs.Count - 1; i >= 0; i--)
            {
                pending.Push(subdirs[i]);
            }
        }
    }

    // A directory of many entries is stat'ed on every core: the scans that gate a recording's start (the baseline) and
    // its end (the reconcile scan) wait for nothing else, and a statx costs a trap into this VM's kernel each
    // (20,000 files: ~80 ms on one core). Results keep the listing's order.
    private const int ParallelStatMinimum = 1024;

    private static (string Rel, EntryStat? Stat)[] StatAll(int dirFd, string dirAbs, string dirRel, string[] names, int rootIndex, PathFilter filter)
    {
        var entries = new (string Rel, EntryStat? Stat)[names.Length];
        void StatOne(int i)
        {
            var rel = dirRel.Length == 0 ? names[i] : dirRel + "/" + names[i];
            EntryStat? stat = null;
            if (!filter.IsExcluded(rootIndex, rel))
            {
                try
                {
                    stat = EntryStat.LstatAt(dirFd, names[i], dirAbs);
                }
                catch (IOException)
                {
                    // not searchable: skipped like a vanished entry
                }
            }

            entries[i] = (rel, stat);
        }

        if (names.Length < ParallelStatMinimum || Environment.ProcessorCount < 2)
        {
            for (var i = 0; i < names.Length; i++)
            {
                StatOne(i);
            }
        }
        else
        {
            var workers = Math.Min(Environment.ProcessorCount, 4);
            var slice = (names.Length + workers - 1) / workers;
            Parallel.For(0, workers, w =>
            {
                for (var i = w * slice; i < Math.Min(names.Length, (w + 1) * slice); i++)
                {
                    StatOne(i);
                }
            });
        }

        return entries;
    }

    public static string Join(string root, string rel) => LongPath.Join(root, rel);
}
