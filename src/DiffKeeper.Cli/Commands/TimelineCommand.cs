using System.CommandLine;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Report;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Commands;

internal static class TimelineCommand
{
    private static readonly string[] Formats = ["text", "json", "chrome-trace"];

    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var path = new Option<string?>("--path") { Description = "Only events whose path (or rename target) matches GLOB", HelpName = "GLOB" };
        var pid = new Option<int[]>("--pid") { Description = "Only events of process N (repeatable)", HelpName = "N" };
        var comm = new Option<string[]>("--comm") { Description = "Only events of programs whose name (comm) matches GLOB (repeatable)", HelpName = "GLOB" };
        var op = new Option<string[]>("--op")
        {
            Description = "Only these operations (repeatable or comma-separated): " + string.Join(", ", Enum.GetValues<ChangeOp>().Select(o => o.Name())),
            HelpName = "OP",
        };
        var since = CommonOptions.Time("--since", "Only events at or after T: " + CommonOptions.TimeHelp);
        var until = CommonOptions.Time("--until", "Only events at or before T");
        var noFold = new Option<bool>("--no-fold") { Description = "One line per event: do not fold a burst of writes by one process to one file into one line" };
        var format = new Option<string>("--format")
        {
            Description = "text (default), json (as --json), or chrome-trace: the Trace Event Format JSON that ui.perfetto.dev and chrome://tracing open",
            HelpName = "FORMAT",
            DefaultValueFactory = _ => "text",
        }.ExpectingOneOf(Formats);
        var json = new Option<bool>("--json") { Description = "One JSON object per event and line, never folded: session, seq, time_ns, time, wall, op, path, path2, size, pid, comm, detail, offset, length (exit_code for EXIT; offset, length null unless eBPF; an fallocate's or punched hole's range)" };
        var cmd = new Command("timeline", """
            List every recorded change in order, with the command's exit status last. In text, consecutive writes by
            one process to one file with the same detail, less than 100 ms apart, are one line with their count and,
            when every length is known (eBPF), their bytes ("x37 writes, 148 KiB in 00:00:00.012", #first-#last).
            Filters combine (all must match); the exit line is kept by path, --pid and --comm filters, and is subject
            to --op, --since and --until.
            Examples: diffkeeper timeline --comm python3 --op WRITE,TRUNCATE --since 1.5s
                      diffkeeper timeline --format chrome-trace > trace.json   (open it in ui.perfetto.dev)
            """)
        {
            trace, session, path, pid, comm, op, since, until, noFold, format, json,
        };
        cmd.SetAction(pr =>
        {
            var chosen = pr.GetValue(json) ? "json" : pr.GetValue(format)!.ToLowerInvariant();
            if (pr.GetValue(json) && pr.GetResult(format) is { Implicit: false } && pr.GetValue(format) is not "json")
            {
                throw new DiffKeeperException(ExitCode.Usage, "--json is --format json; give one of them");
            }

            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var filter = new EventFilter(
                s.StartedWallNs,
                pr.GetValue(path) is { } g ? new Glob(g) : null,
                pr.GetValue(pid) is { Length: > 0 } pids ? pids.ToHashSet() : null,
                pr.GetValue(comm) is { Length: > 0 } comms ? comms.Select(c => new Glob(c)).ToList() : null,
                ParseOps(pr.GetValue(op)),
                pr.GetValue(since),
                pr.GetValue(until));
            filter.CheckRange(reader, s, As(pr.GetResult(since)), As(pr.GetResult(until)));
            var events = reader.Events(s).Where(filter.Keep);
            var lines = pr.GetValue(noFold) || chosen == "json" ? FoldedEvent.Each(events) : FoldedEvent.Fold(events);
            switch (chosen)
            {
                case "chrome-trace":
                {
                    using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                    using (var j = new Utf8JsonWriter(stdout))
                    {
                        ChromeTraceWriter.Write(j, s, lines);
                    }

                    stdout.WriteByte((byte)'\n');
                    stdout.Flush();
                    return 0;
                }

                case "json":
                {
                    using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                    using var jsonWriter = new Utf8JsonWriter(stdout);
                    foreach (var line in lines)
                    {
                        TimelineRenderer.Json(jsonWriter, s, line.First);
                        jsonWriter.Flush();
                        jsonWriter.Reset();
                        stdout.WriteByte((byte)'\n');
                    }

                    stdout.Flush();
                    return 0;
                }
            }

            TimelineRenderer.Header(console.Out, s);
            var colour = console is SystemConsole && TerminalStyle.Enabled(1);
            var sawExit = false;
            foreach (var line in lines)
            {
                sawExit |= line.First.Op == ChangeOp.Exit;
                console.Out.WriteLine(TimelineRenderer.Line(line, colour));
            }

            if (!sawExit && s.State != "finished")
            {
                console.Out.WriteLine($"(no exit status yet: {TimelineRenderer.Describe(s)})");
            }

            console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>An option's value as the user wrote it.</summary>
    private static string As(System.CommandLine.Parsing.OptionResult? result) => result is { Tokens.Count: > 0 } r ? r.Tokens[^1].Value : "";

    private static HashSet<ChangeOp>? ParseOps(string[]? values)
    {
        if (values is not { Length: > 0 })
        {
            return null;
        }

        var ops = new HashSet<ChangeOp>();
        foreach (var word in values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)))
        {
            var found = Enum.GetValues<ChangeOp>().Where(o => o.Name().Equals(word, StringComparison.OrdinalIgnoreCase)).ToList();
            if (found.Count == 0)
            {
                throw new DiffKeeperException(ExitCode.Usage,
                    $"--op expects one of {string.Join(", ", Enum.GetValues<ChangeOp>().Select(o => o.Name()))}, got '{word}'");
            }

            ops.Add(found[0]);
        }

        return ops;
    }

    /// <summary>What `timeline` keeps of the events.</summary>
    private sealed record EventFilter(long StartedWallNs, Glob? Path, HashSet<int>? Pids, List<Glob>? Comms, HashSet<ChangeOp>? Ops, TimeSpec? From, TimeSpec? To)
    {
        public bool Keep(EventRecord e)
        {
            if (Ops is not null && !Ops.Contains(e.Op))
            {
                return false;
            }

            if (e.Op != ChangeOp.Exit)
            {
                if (Path is not null && !((e.Path is { } p && Path.IsMatch(p)) || (e.Path2 is { } q && Path.IsMatch(q))))
                {
                    return false;
                }

                if (Pids is not null && (e.Pid is not { } pid || !Pids.Contains(pid)))
                {
                    return false;
                }

                if (Comms is not null && (e.Comm is not { } c || !Comms.Any(g => g.IsMatch(c))))
                {
                    return false;
                }
            }

            return (From is null || Compare(e, From.Value) >= 0) && (To is null || Compare(e, To.Value) <= 0);
        }

        /// <summary>An inverted range is a mistake, not an empty answer.</summary>
        public void CheckRange(TraceReader reader, SessionInfo s, string fromText, string toText)
        {
            if (From is not { } from || To is not { } to)
            {
                return;
            }

            var inverted = from.Kind == to.Kind
                ? from.Value > to.Value
                : from.Kind == TimeSpecKind.End || to.Kind == TimeSpecKind.Start
                    ? from.Kind != to.Kind
                    : reader.Resolve(s, from) > reader.Resolve(s, to);
            if (inverted)
            {
                throw new DiffKeeperException(ExitCode.Usage, $"--since {fromText} is after --until {toText}: the range holds nothing; swap them");
            }
        }

        /// <summary>Where an event lies relative to a moment: negative before, 0 at, positive after.</summary>
        private int Compare(EventRecord e, TimeSpec t) => t.Kind switch
        {
            TimeSpecKind.Start => 1,
            TimeSpecKind.End => -1,
            TimeSpecKind.Seq => e.Seq.CompareTo(t.Value),
            TimeSpecKind.SinceStart => e.TimeNs.CompareTo(t.Value),
            _ => (StartedWallNs + e.TimeNs).CompareTo(t.Value),
        };
    }
}
