using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class LogCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var path = new Argument<string>("path") { Description = "Path relative to the watched directory, or absolute" };
        var json = new Option<bool>("--json")
        {
            Description = "Print one JSON object: session, path, events (as timeline --json), versions (seq, time_ns, kind, mode, size, content, target, mtime_ns, pruned)",
        };
        var cmd = new Command("log", "Show one path's history: every event that touched it and every version stored.") { trace, session, path, json };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var p = pr.GetValue(path)!;
            var found = reader.FindPath(s, p)
                ?? throw new DiffKeeperException(ExitCode.NotFound, $"{p} was never seen in session {s.Id}");
            var name = TraceReader.DisplayPath(s, found.RootId, found.Rel);
            if (pr.GetValue(json))
            {
                JsonSummary.ToStdout(console, j =>
                {
                    j.WriteNumber("session", s.Id);
                    j.WriteString("path", name);
                    j.WriteStartArray("events");
                    foreach (var e in reader.Events(s).Where(e => e.Path == name || e.Path2 == name || e.Op == ChangeOp.Lost))
                    {
                        TimelineRenderer.Json(j, s, e);
                    }

                    j.WriteEndArray();
                    j.WriteStartArray("versions");
                    foreach (var v in reader.VersionsOf(s, found.PathId))
                    {
                        j.WriteStartObject();
                        j.WriteNumber("seq", v.Seq);
                        j.WriteNumber("time_ns", v.TimeNs);
                        j.WriteString("kind", DiffRenderer.Kind(v.Kind));
                        j.WriteString("mode", Mode(v.Mode));
                        j.WriteNumber("size", v.Size);
                        j.WriteString("content", v.ContentId is null ? null : Convert.ToHexStringLower(v.ContentId));
                        j.WriteString("target", v.Target);
                        j.WriteNumber("mtime_ns", v.MtimeNs);
                        j.WriteBoolean("pruned", v.Pruned);
                        j.WriteEndObject();
                    }

                    j.WriteEndArray();
                });
                return 0;
            }

            var w = console.Out;
            w.WriteLine($"{PathBytes.Display(name)} · session {s.Id}");
            w.WriteLine("events:");
            foreach (var e in reader.Events(s).Where(e => e.Path == name || e.Path2 == name || e.Op == ChangeOp.Lost))
            {
                w.WriteLine("  " + TimelineRenderer.Line(e));
            }

            w.WriteLine("versions (the state after event #N):");
            foreach (var v in reader.VersionsOf(s, found.PathId))
            {
                var what = v.Kind switch
                {
                    EntryKind.File when v.Pruned => $"file     {Mode(v.Mode)}  {TimelineRenderer.FormatSize(v.Size),10}  pruned (content dropped by 'prune', run's retention, record --keep on-failure or --max-trace-size)",
                    EntryKind.File => $"file     {Mode(v.Mode)}  {TimelineRenderer.FormatSize(v.Size),10}  content {Convert.ToHexStringLower(v.ContentId ?? [])[..Math.Min(12, (v.ContentId?.Length ?? 0) * 2)]}",
                    EntryKind.Directory => $"dir      {Mode(v.Mode)}",
                    EntryKind.Symlink => $"symlink  -> {PathBytes.Display(v.Target ?? "")}",
                    _ => "absent",
                };
                var mtime = v.Kind == EntryKind.Absent ? "" : "  mtime " + DateTimeOffset.UnixEpoch.AddTicks(v.MtimeNs / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);
                w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  #{v.Seq,-6} {(v.Seq == 0 ? "baseline" : "        ")}  {what}{mtime}"));
            }

            w.Flush();
            return 0;
        });
        return cmd;
    }

    private static string Mode(int mode) => Convert.ToString(mode & 0xFFF, 8).PadLeft(4, '0');
}
