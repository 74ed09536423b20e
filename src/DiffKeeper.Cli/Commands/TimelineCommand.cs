using System.CommandLine;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Commands;

internal static class TimelineCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var path = new Option<string?>("--path") { Description = "Only events whose path (or rename target) matches GLOB", HelpName = "GLOB" };
        var since = CommonOptions.Time("--since", "Only events at or after T: " + CommonOptions.TimeHelp);
        var until = CommonOptions.Time("--until", "Only events at or before T");
        var json = new Option<bool>("--json") { Description = "One JSON object per line: session, seq, time_ns, time, wall, op, path, path2, size, pid, comm, detail" };
        var cmd = new Command("timeline", "List every recorded change in order, with the command's exit status last.")
        {
            trace, session, path, since, until, json,
        };
        cmd.SetAction(pr =>
        {
            var glob = pr.GetValue(path) is { } g ? new Glob(g) : null;
            var from = pr.GetValue(since);
            var to = pr.GetValue(until);
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var asJson = pr.GetValue(json);
            using var stdout = asJson ? new BufferedStream(console.OpenStandardOutput(), 1 << 16) : null;
            using var jsonWriter = stdout is null ? null : new Utf8JsonWriter(stdout);
            if (!asJson)
            {
                TimelineRenderer.Header(console.Out, s);
            }

            var sawExit = false;
            foreach (var e in reader.Events(s))
            {
                sawExit |= e.Op == ChangeOp.Exit;
                if (!Keep(e, s, glob, from, to))
                {
                    continue;
                }

                if (jsonWriter is not null)
                {
                    TimelineRenderer.Json(jsonWriter, s, e);
                    jsonWriter.Flush();
                    jsonWriter.Reset();
                    stdout!.WriteByte((byte)'\n');
                }
                else
                {
                    console.Out.WriteLine(TimelineRenderer.Line(e));
                }
            }

            if (!asJson && !sawExit)
            {
                console.Out.WriteLine($"(no exit status yet: {TimelineRenderer.Describe(s)})");
            }

            stdout?.Flush();
            console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    private static bool Keep(EventRecord e, SessionInfo s, Glob? glob, TimeSpec? from, TimeSpec? to)
    {
        if (e.Op == ChangeOp.Exit)
        {
            return true; // the exit status is always the last line
        }

        if (glob is not null && !((e.Path is { } p && glob.IsMatch(p)) || (e.Path2 is { } q && glob.IsMatch(q))))
        {
            return false;
        }

        return (from is null || Compare(e, s, from.Value) >= 0) && (to is null || Compare(e, s, to.Value) <= 0);
    }

    /// <summary>Where an event lies relative to a moment: negative before, 0 at, positive after.</summary>
    private static int Compare(EventRecord e, SessionInfo s, TimeSpec t) => t.Kind switch
    {
        TimeSpecKind.Start => 1,
        TimeSpecKind.End => -1,
        TimeSpecKind.Seq => e.Seq.CompareTo(t.Value),
        TimeSpecKind.SinceStart => e.TimeNs.CompareTo(t.Value),
        _ => (s.StartedWallNs + e.TimeNs).CompareTo(t.Value),
    };
}
