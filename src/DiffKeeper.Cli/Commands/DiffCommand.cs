using System.CommandLine;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class DiffCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var against = new Option<long?>("--against")
        {
            Description = "Compare --session (the old side) with session N (the new side), each at --time",
            HelpName = "N",
        }.Expecting("a session number");
        var from = CommonOptions.Time("--from", "The old moment within the session (default: start): " + CommonOptions.TimeHelp);
        var to = CommonOptions.Time("--to", "The new moment within the session (default: end)");
        var time = CommonOptions.Time("--time", "With --against: the moment taken in both sessions (default: end)");
        var stat = new Option<bool>("--stat") { Description = "One line per path with counts of changed lines or bytes, and a total" };
        var json = new Option<bool>("--json") { Description = "One JSON object per changed path (fields in README, \"diff --json\")" };
        var paths = new Argument<string[]>("path")
        {
            Description = "Only paths matching these globs (as timeline's --path)",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var cmd = new Command("diff", """
            Show what changed between two moments of a session, or between two sessions of one trace (a passing and
            a failing run): added, removed and changed paths, kind, mode and symlink target changes, a unified diff
            for text files (as diff -u prints it) and the changed byte ranges of binary files.
            Exit status: 0 when the two states are the same, 11 when they differ (diff(1)'s 1 is our unexpected
            failure), and the usual codes for errors.
            Examples: diffkeeper diff --from 2s --to '#40' '*.log'
                      diffkeeper diff --session 1 --against 2 --stat
            """)
        {
            trace, session, against, from, to, time, stat, json, paths,
        };
        cmd.SetAction(pr =>
        {
            var other = pr.GetValue(against);
            if (other is not null && (pr.GetValue(from) is not null || pr.GetValue(to) is not null))
            {
                throw new DiffKeeperException(ExitCode.Usage, "--from and --to pick two moments of one session; with --against, --time picks the moment in both sessions");
            }

            if (other is null && pr.GetValue(time) is not null)
            {
                throw new DiffKeeperException(ExitCode.Usage, "--time goes with --against; within one session, give --from and --to");
            }

            if (pr.GetValue(stat) && pr.GetValue(json))
            {
                throw new DiffKeeperException(ExitCode.Usage, "--stat and --json cannot be combined; --json already carries the counts");
            }

            var globs = (pr.GetValue(paths) ?? []).Select(g => new Glob(g)).ToList();
            Func<string, bool>? include = globs.Count == 0 ? null : p => globs.Any(g => g.IsMatch(p) || g.IsMatch("/" + p));

            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var old = reader.Session(pr.GetValue(session));
            var young = other is null ? old : reader.Session(other);
            var oldAt = other is null ? pr.GetValue(from) ?? new TimeSpec(TimeSpecKind.Start, 0) : pr.GetValue(time) ?? TimeSpec.End;
            var youngAt = other is null ? pr.GetValue(to) ?? TimeSpec.End : pr.GetValue(time) ?? TimeSpec.End;
            var before = Materializer.Plan(reader, old, reader.Resolve(old, oldAt));
            var after = Materializer.Plan(reader, young, reader.Resolve(young, youngAt));

            var changes = new List<(EntryChange Change, ContentComparison Content)>();
            foreach (var change in StateDiff.Compare(before, after, include))
            {
                var content = ContentComparison.Of(reader, old, young, change);
                var onlyStoredDifferently = change.Change == "changed" && content.Difference == ContentDifference.Same &&
                    !change.KindChanged && !change.ModeChanged && !change.TargetChanged;
                if (!onlyStoredDifferently)
                {
                    changes.Add((change, content));
                }
            }

            if (pr.GetValue(json))
            {
                using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                using var writer = new Utf8JsonWriter(stdout);
                foreach (var (change, content) in changes)
                {
                    DiffRenderer.Json(writer, change, content);
                    writer.Flush();
                    writer.Reset();
                    stdout.WriteByte((byte)'\n');
                }

                stdout.Flush();
            }
            else if (pr.GetValue(stat))
            {
                DiffRenderer.Stat(console.Out, changes);
                console.Out.Flush();
            }
            else
            {
                using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                foreach (var (change, content) in changes)
                {
                    DiffRenderer.Text(stdout, change, content);
                }

                stdout.Flush();
            }

            return changes.Count == 0 ? 0 : (int)ExitCode.Differences;
        });
        return cmd;
    }
}
