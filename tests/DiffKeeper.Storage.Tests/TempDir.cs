namespace DiffKeeper.Storage.Tests;

/// <summary>A directory under /tmp that is removed when the test ends.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "dk-test-" + Guid.NewGuid().ToString("N")[..12]);

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose() => Remove(Path);

    /// <summary>
    /// Removes a tree through directory descriptors (<see cref="DiffKeeper.Native.LongPath.RemoveTree"/>): .NET's Directory.Delete
    /// can remove neither names that are not UTF-8 (it decodes them with U+FFFD) nor trees deeper than PATH_MAX, which
    /// tests of such paths make.
    /// </summary>
    public static void Remove(string path) => DiffKeeper.Native.LongPath.RemoveTree(path);
}
