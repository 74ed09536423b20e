using System.CommandLine;
using DiffKeeper.Cli.Remote;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;

namespace DiffKeeper.Cli.Commands;

internal static class PullCommand
{
    public static Command Create(IConsole console)
    {
        var url = new Argument<string>("URL") { Description = "The remote store, s3://bucket/prefix" };
        var dir = new Argument<string>("DIR") { Description = "A new local trace directory (absent or empty)" };
        var session = CommonOptions.Session();
        session.Description = "The remote session (default: the latest; 'diffkeeper sessions --trace URL' lists them)";
        var cmd = new Command("pull", "Download one session of a remote store into a new local trace (parallel range reads, through the local cache).")
        {
            url, dir, session,
        };
        cmd.SetAction(async (pr, cancel) =>
        {
            var location = S3Location.Parse(pr.GetValue(url)!);
            var target = Path.GetFullPath(pr.GetValue(dir)!);
            if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            {
                throw new DiffKeeperException(ExitCode.OutputExists, $"{target} is not empty; pull into a new directory");
            }

            using var store = S3ObjectStore.FromEnvironment(location);
            var remote = new RemoteTrace(store, RemoteCache.Root());
            var manifest = await remote.SessionAsync(pr.GetValue(session), cancel).ConfigureAwait(false);
            var cached = await remote.OpenAsync(manifest, content: true, cancel).ConfigureAwait(false);
            CopyTrace(cached, target);
            console.Out.WriteLine($"pulled session {manifest.Key} into {target}: {store.Counters}");
            console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>Copies the catalog and the packs (sparse where the remote pack's other sessions' records are not needed).</summary>
    internal static void CopyTrace(string from, string to)
    {
        var temp = to + ".pull-" + Environment.ProcessId;
        Directory.CreateDirectory(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.Copy(Path.Combine(from, "catalog.db"), Path.Combine(temp, "catalog.db"));
        var packs = Path.Combine(from, "packs");
        foreach (var pack in Directory.Exists(packs) ? Directory.EnumerateFiles(packs, "*.pack", SearchOption.AllDirectories) : [])
        {
            var dest = Path.Combine(temp, Path.GetRelativePath(from, pack));
            Directory.CreateDirectory(Path.GetDirectoryName(dest)!);
            File.Copy(pack, dest);
        }

        if (Directory.Exists(to))
        {
            Directory.Delete(to);
        }

        Directory.Move(temp, to);
    }
}
