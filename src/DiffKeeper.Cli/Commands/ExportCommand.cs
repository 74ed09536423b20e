using System.CommandLine;
using System.Diagnostics;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class ExportCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var time = CommonOptions.Time("--time", "The moment to rebuild (default: end): " + CommonOptions.TimeHelp);
        var output = new Option<string>("--out", "-o") { Description = "Directory to create (must be new or empty)", Required = true, HelpName = "DIR" };
        var force = new Option<bool>("--force", "-f") { Description = "Replace --out even if it is not empty" };
        var include = new Option<string[]>("--include", "-i")
        {
            Description = "Only entries matching GLOB (repeatable; as timeline's --path), with the directories above them",
            HelpName = "GLOB",
        };
        var json = new Option<bool>("--json") { Description = "Print the summary as one JSON object on stdout: session, seq, out, files, directories, symlinks, bytes, elapsed_ms" };
        var cmd = new Command("export", """
            Rebuild the watched tree exactly as it was at a moment: contents, modes, mtimes, symlinks, empty
            directories. Built in a temporary sibling of --out and renamed into place. Never writes outside --out.
            With --include, only the matching entries and their parent directories are written.
            Example: diffkeeper export --time 2m14s --out /tmp/before
                     diffkeeper export --time '#42' --include '*.log' --include 'conf/**' --out /tmp/logs
            """)
        {
            trace, session, time, output, force, include, json,
        };
        cmd.SetAction(pr =>
        {
            var sw = Stopwatch.StartNew();
            var at = pr.GetValue(time) ?? TimeSpec.End;
            _ = CatalogHeap.Reserve(pr.GetValue(trace)!); // not given back: trimming the heap at the exit only cost time (as materialize)
            using var collections = CollectionPause.Start(CollectionPauseBytes);
            using var reader = TraceReader.Open(pr.GetValue(trace)!);

            // One read transaction for the whole export: the moment, the state and every blob row come from one
            // committed state even while a recording or a gc commits, and SQLite takes and drops its WAL read
            // lock once instead of around each of the thousands of blob lookups.
            using var snapshot = reader.Snapshot(rememberBlobs: true);
            var s = reader.Session(pr.GetValue(session));
            var seq = reader.Resolve(s, at);
            if (s.ContentsNotKept is not null)
            {
                throw VersionContent.NotKept(s);
            }

            var globs = (pr.GetValue(include) ?? []).Select(g => new Glob(g)).ToList();
            ExportResult result;
            using (var progress = TerminalProgress.ForStderr(console))
            {
                result = Materializer.Export(reader, s, seq, pr.GetValue(output)!, pr.GetValue(force),
                    globs.Count == 0 ? null : p => globs.Any(g => g.IsMatch(p) || g.IsMatch("/" + p)), progress.Tree("export"));
            }

            if (pr.GetValue(json))
            {
                JsonSummary.ToStdout(console, j =>
                {
                    j.WriteNumber("session", s.Id);
                    j.WriteNumber("seq", seq);
                    j.WriteString("out", Path.GetFullPath(pr.GetValue(output)!));
                    j.WriteNumber("files", result.Files);
                    j.WriteNumber("directories", result.Directories);
                    j.WriteNumber("symlinks", result.Symlinks);
                    j.WriteNumber("bytes", result.Bytes);
                    j.WriteNumber("elapsed_ms", sw.ElapsedMilliseconds);
                });
                return 0;
            }

            console.Error.WriteLine(
                $"diffkeeper: exported session {s.Id} at {at} (after event #{seq}) to {Path.GetFullPath(pr.GetValue(output)!)}: " +
                $"{Count(result.Files, "file")} ({TimelineRenderer.FormatSize(result.Bytes)}), {Count(result.Directories, "directory", "directories")}, {Count(result.Symlinks, "symlink")} in {sw.ElapsedMilliseconds} ms");
            return 0;
        });
        return cmd;
    }

    // An export's objects (the state's rows, prepared files, paths) mostly live until it ends: W3's 1,000 files made
    // one collection midway, which moved ~1 MB of them into fresh pages (~280 page faults, docs/benchmarks.md
    // "w3export"). Up to this much is allocated without one; past it the runtime collects as usual.
    private const long CollectionPauseBytes = 32L << 20;

    private static string Count(int n, string one, string? many = null) => n == 1 ? $"1 {one}" : $"{n} {many ?? one + "s"}";
}
