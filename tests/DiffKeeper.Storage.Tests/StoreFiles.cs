namespace DiffKeeper.Storage.Tests;

/// <summary>File-level helpers the store tests share: copying a trace, measuring its packs.</summary>
public static class StoreFiles
{
    public static void CopyDirectory(string from, string to)
    {
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }

    /// <summary>Bytes of every pack file of a trace, as on disk.</summary>
    public static long PackBytes(string trace) =>
        Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
}
