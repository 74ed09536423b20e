namespace DiffKeeper.Fuzz;

/// <summary>
/// A copy of the base trace in a private directory (on /dev/shm when there is one: every execution writes it),
/// in which one file is replaced by the fuzz input before each run.
/// </summary>
public sealed class TraceSandbox
{
    public TraceSandbox(string baseDir)
    {
        var tmp = Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath();
        Root = Path.Combine(tmp, $"dk-fuzz-{Environment.ProcessId}");
        TraceDir = Path.Combine(Root, "trace");
        OutDir = Path.Combine(Root, "out");
        if (Directory.Exists(Root))
        {
            Directory.Delete(Root, recursive: true);
        }

        Directory.CreateDirectory(TraceDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var file in Directory.EnumerateFiles(baseDir, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(baseDir, file);
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(TraceDir, rel))!);
            File.Copy(file, Path.Combine(TraceDir, rel));
        }

        PackPath = Directory.EnumerateFiles(Path.Combine(TraceDir, "packs"), "*.pack", SearchOption.AllDirectories).Single();
        AppDomain.CurrentDomain.ProcessExit += (_, _) => Directory.Delete(Root, recursive: true);
    }

    public string Root { get; }

    public string TraceDir { get; }

    public string OutDir { get; }

    public string CatalogPath => Path.Combine(TraceDir, "catalog.db");

    /// <summary>The base trace's one pack file.</summary>
    public string PackPath { get; }

    /// <summary>Writes <paramref name="bytes"/> as <paramref name="path"/> and removes what an earlier run left.</summary>
    public void Put(string path, ReadOnlySpan<byte> bytes)
    {
        foreach (var leftover in (string[])["catalog.db-wal", "catalog.db-shm", "catalog.db-journal"])
        {
            File.Delete(Path.Combine(TraceDir, leftover));
        }

        using var file = File.Create(path);
        file.Write(bytes);
    }
}
