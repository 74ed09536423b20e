using System.Security.Cryptography;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;

namespace DiffKeeper.IntegrationTests;

/// <summary>The ground truth of a tree: kind, mode, content hash, symlink target and mtime of every entry.</summary>
public sealed record Entry(EntryKind Kind, int Mode, string? Sha256, string? Target, long MtimeNs);

public static class TreeSnapshot
{
    public static SortedDictionary<string, Entry> Take(string root)
    {
        var map = new SortedDictionary<string, Entry>(StringComparer.Ordinal);
        var filter = new DiffKeeper.Capture.PathFilter([root], "/nonexistent-trace-dir", []);
        foreach (var (rel, st) in TreeWalker.Walk(root, 0, filter))
        {
            var abs = Path.Combine(root, rel);
            var entry = st.Kind switch
            {
                EntryKind.File => new Entry(EntryKind.File, st.Mode, Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(abs))), null, st.MtimeNs),
                EntryKind.Symlink => new Entry(EntryKind.Symlink, 0, null, new FileInfo(abs).LinkTarget, 0),
                _ => new Entry(EntryKind.Directory, st.Mode, null, null, 0),
            };
            map[rel] = entry;
        }

        return map;
    }

    /// <summary>Asserts two snapshots are equal, listing the first differences.</summary>
    public static void AssertSame(SortedDictionary<string, Entry> expected, SortedDictionary<string, Entry> actual, string what)
    {
        var problems = new List<string>();
        foreach (var (path, e) in expected)
        {
            if (!actual.TryGetValue(path, out var a))
            {
                problems.Add($"missing {path} ({e.Kind})");
            }
            else if (a != e)
            {
                problems.Add($"differs {path}: expected {e}, got {a}");
            }
        }

        problems.AddRange(actual.Keys.Where(k => !expected.ContainsKey(k)).Select(k => $"unexpected {k}"));
        Assert.True(problems.Count == 0, $"{what}: {problems.Count} differences (of {expected.Count} entries):\n  " + string.Join("\n  ", problems.Take(20)));
    }
}
