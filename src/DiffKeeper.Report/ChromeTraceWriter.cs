using System.Globalization;
using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Report;

/// <summary>
/// Writes a session's timeline in the Trace Event Format's JSON object form (what chrome://tracing and
/// ui.perfetto.dev open): <c>{"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}</c>.
/// Each change is an instant event (<c>ph</c> "i", thread scope) on its process's track, a folded burst of writes a
/// complete event (<c>ph</c> "X" with <c>dur</c>); <c>ts</c> and <c>dur</c> are microseconds since the session's
/// start; <c>tid</c> is the pid (the catalog keeps no thread ids). Every process gets <c>M</c> events naming it
/// (<c>process_name</c>, <c>thread_name</c>); events of a backend that reports no pid, and the
/// command's exit (a global instant event), go to pid 0, named so. <c>args</c> carry path, path2, size (the file's size after the change), offset and length (an exact backend's single write; a burst's byte total is <c>bytes</c>),
/// seq (and last_seq and count for a burst), detail. Offsets and lengths are absent where the catalog has none
/// (inotify, fanotify, a trace before store format 4).
/// </summary>
public static class ChromeTraceWriter
{
    public const int UnknownPid = 0;

    public static void Write(Utf8JsonWriter j, SessionInfo session, IEnumerable<FoldedEvent> events)
    {
        j.WriteStartObject();
        j.WriteStartArray("traceEvents");
        var named = new HashSet<int>();
        foreach (var f in events)
        {
            var e = f.First;
            var pid = e.Pid ?? UnknownPid;
            if (e.Op == ChangeOp.Exit)
            {
                pid = UnknownPid;
            }

            if (named.Add(pid))
            {
                var name = pid == UnknownPid ? "session (its exit, and changes by processes the backend does not name)" : $"{e.Comm ?? "?"} ({pid.ToString(CultureInfo.InvariantCulture)})";
                Metadata(j, "process_name", pid, name);
                Metadata(j, "thread_name", pid, name);
            }

            j.WriteStartObject();
            j.WriteString("name", e.Op == ChangeOp.Exit ? $"EXIT {e.Detail ?? $"exit status {e.Size}"}" : Name(e));
            j.WriteString("cat", e.Op.Name());
            if (e.Op == ChangeOp.Exit)
            {
                j.WriteString("ph", "i");
                j.WriteString("s", "g");
            }
            else if (f.IsBurst)
            {
                j.WriteString("ph", "X");
                j.WriteNumber("dur", Math.Max(1, (f.Last.TimeNs - e.TimeNs) / 1000.0));
            }
            else
            {
                j.WriteString("ph", "i");
                j.WriteString("s", "t");
            }

            j.WriteNumber("ts", e.TimeNs / 1000.0);
            j.WriteNumber("pid", pid);
            j.WriteNumber("tid", pid);
            j.WriteStartObject("args");
            j.WriteNumber("seq", e.Seq);
            if (f.IsBurst)
            {
                j.WriteNumber("last_seq", f.Last.Seq);
                j.WriteNumber("count", f.Count);
                if (f.Bytes is { } bytes)
                {
                    j.WriteNumber("bytes", bytes);
                }
            }
            else if (e.Offset is { } offset && e.Length is { } length)
            {
                j.WriteNumber("offset", offset);
                j.WriteNumber("length", length);
            }

            if (e.Path is not null)
            {
                j.WriteString("path", PathText.Of(e.Path));
            }

            if (e.Path2 is not null)
            {
                j.WriteString("path2", PathText.Of(e.Path2));
            }

            if (f.Last.Size is { } size)
            {
                j.WriteNumber(e.Op == ChangeOp.Exit ? "exit_code" : "size", size);
            }

            if (e.Detail is not null)
            {
                j.WriteString("detail", e.Detail);
            }

            j.WriteEndObject();
            j.WriteEndObject();
        }

        j.WriteEndArray();
        j.WriteString("displayTimeUnit", "ms");
        j.WriteStartObject("otherData");
        j.WriteNumber("session", session.Id);
        j.WriteString("command", session.Command);
        j.WriteString("capture", session.Capture);
        j.WriteString("started", session.StartedWall.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture));
        j.WriteEndObject();
        j.WriteEndObject();
    }

    private static string Name(EventRecord e) => e.Path is null ? e.Op.Name() : $"{e.Op.Name()} {PathText.Of(e.Path)}";

    private static void Metadata(Utf8JsonWriter j, string kind, int pid, string name)
    {
        j.WriteStartObject();
        j.WriteString("name", kind);
        j.WriteString("ph", "M");
        j.WriteNumber("pid", pid);
        j.WriteNumber("tid", pid);
        j.WriteStartObject("args");
        j.WriteString("name", name);
        j.WriteEndObject();
        j.WriteEndObject();
    }
}
