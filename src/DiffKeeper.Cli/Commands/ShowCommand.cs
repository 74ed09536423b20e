using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Commands;

internal static class ShowCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var time = CommonOptions.Time("--time", "The moment (default: end): " + CommonOptions.TimeHelp);
        var path = new Argument<string>("path") { Description = "Path relative to the watched directory, or absolute" };
        var cmd = new Command("show", "Print a file's bytes as they were at a moment, on stdout.") { trace, session, time, path };
        cmd.SetAction(pr =>
        {
            var at = pr.GetValue(time) ?? TimeSpec.End;
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var seq = reader.Resolve(s, at);
            var (version, name) = FindVersion(reader, s, pr.GetValue(path)!, seq, at);
            switch (version.Kind)
            {
                case EntryKind.Directory:
                    throw new DiffKeeperException(ExitCode.NotFound, $"{name} is a directory at {at}; use 'diffkeeper export' for trees");
                case EntryKind.Symlink:
                    throw new DiffKeeperException(ExitCode.NotFound, $"{name} is a symlink to '{version.Target}' at {at}; show its target instead");
            }

            using var stdout = console.OpenStandardOutput();
            long written = 0;
            var zeros = new byte[64 * 1024];
            void Fill(long upTo)
            {
                while (written < upTo)
                {
                    var n = (int)Math.Min(zeros.Length, upTo - written);
                    stdout.Write(zeros, 0, n);
                    written += n;
                }
            }

            // A reader that leaves (`show big | head -c 100`) ends this at once, quietly (CliApp, at a broken pipe).
            VersionContent.Read(reader, s, version, (data, offset) =>
            {
                Fill(offset); // holes read as zeros
                stdout.Write(data.Span);
                written += data.Length;
            });
            Fill(version.Size);
            stdout.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>The path's version in effect after event <paramref name="seq"/>; one-line errors when there is none.</summary>
    public static (VersionRecord Version, string Name) FindVersion(TraceReader reader, SessionInfo s, string path, long seq, TimeSpec at)
    {
        var found = reader.FindPath(s, path)
            ?? throw new DiffKeeperException(ExitCode.NotFound, $"{path} was never seen in session {s.Id} (paths are relative to {string.Join(", ", s.Roots.Select(r => r.Path))})");
        var versions = reader.VersionsOf(s, found.PathId);
        var name = TraceReader.DisplayPath(s, found.RootId, found.Rel);
        var version = versions.LastOrDefault(v => v.Seq <= seq);
        if (version is null || version.Kind == EntryKind.Absent)
        {
            throw new DiffKeeperException(ExitCode.NotFound, $"{name} did not exist at {at} (after event #{seq}); 'diffkeeper log {name}' shows when it did");
        }

        return (version, name);
    }
}
