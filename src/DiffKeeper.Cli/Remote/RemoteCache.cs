namespace DiffKeeper.Cli.Remote;

/// <summary>
/// Where remote stores are cached locally: $DIFFKEEPER_CACHE, else $XDG_CACHE_HOME/diffkeeper, else
/// ~/.cache/diffkeeper, else /tmp/diffkeeper-cache-UID. Everything there can be deleted at any time except the
/// local traces of `record --trace s3://…` whose upload failed (record names them; `push` finishes them).
/// </summary>
internal static class RemoteCache
{
    public static string Root()
    {
        Func<string, string?> env = Environment.GetEnvironmentVariable;
        var root = env("DIFFKEEPER_CACHE") is { Length: > 0 } c ? c
            : env("XDG_CACHE_HOME") is { Length: > 0 } x ? Path.Combine(x, "diffkeeper")
            : env("HOME") is { Length: > 0 } h ? Path.Combine(h, ".cache", "diffkeeper")
            : Path.Combine(Path.GetTempPath(), "diffkeeper-cache-" + Native.Interop.Libc.Geteuid());
        Directory.CreateDirectory(root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return Path.GetFullPath(root);
    }
}
