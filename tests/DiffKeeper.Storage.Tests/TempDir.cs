namespace DiffKeeper.Storage.Tests;

/// <summary>A directory under /tmp that is removed when the test ends.</summary>
public sealed class TempDir : IDisposable
{
    /// <summary>A new directory under <paramref name="parent"/> (default: the temp directory).</summary>
    public TempDir(string? parent = null)
    {
        Path = System.IO.Path.Combine(parent ?? System.IO.Path.GetTempPath(), "dk-test-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
