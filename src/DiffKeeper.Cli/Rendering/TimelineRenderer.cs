using System.Globalization;
using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Report;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Rendering;

/// <summary>Formats timeline events as text lines or JSON lines.</summary>
public static class TimelineRenderer
{
    public static void Header(TextWriter w, SessionInfo s)
    {
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"session {s.Id} · {s.Capture} · started {s.StartedWall:yyyy-MM-ddTHH:mm:ss.fffZ} · {Describe(s)}"));
        w.WriteLine($"  $ {Printable(s.Command)}");
        w.WriteLine($"  watched: {string.Join(", ", s.Roots.Select(r => PathBytes.Display(r.Path)))}");
    }

    public static string Describe(SessionInfo s) => s.State switch
    {
        "finished" => s.KilledBy ?? $"exit status {s.ExitCode}",
        "recording" => "recording now (or its recorder was killed)",
        _ => "interrupted: the recorder stopped before the command ended",
    };

    /// <summary>A trace is untrusted: control characters in its text (terminal escapes) are shown as '?'.</summary>
    public static string Printable(string text) =>
        text.Any(char.IsControl) ? new string(text.Select(c => char.IsControl(c) ? '?' : c).ToArray()) : text;

    public static string Line(EventRecord e, bool colour = false)
    {
        var sb = new System.Text.StringBuilder(96);
        sb.Append('[').Append(TimeSpec.FormatDuration(e.TimeNs)).Append("] ");
        var op = e.Op.Name().PadRight(8);
        sb.Append(colour ? TerminalStyle.Op(e.Op, op) : op).Append(' ');
        if (e.Op == ChangeOp.Exit)
        {
            sb.Append(Printable(e.Detail ?? $"exit status {e.Size}"));
            return sb.ToString();
        }

        if (e.Path is not null)
        {
            sb.Append(PathBytes.Display(e.Path));
        }

        if (e.Path2 is not null)
        {
            sb.Append(" -> ").Append(PathBytes.Display(e.Path2));
        }

        // An exact write says how much it wrote and where, then the file's size after it.
        var range = e.Length is not null && e.Offset is not null;
        if (range)
        {
            sb.Append("  ").Append(FormatSize(e.Length!.Value)).Append(" at ").Append(e.Offset!.Value.ToString(CultureInfo.InvariantCulture));
        }

        if (e.Size is { } size && e.Op is not ChangeOp.Mkdir and not ChangeOp.Rmdir and not ChangeOp.Delete)
        {
            sb.Append(range ? " → " : "  ").Append(FormatSize(size));
        }

        if (e.Pid is { } pid)
        {
            sb.Append("  pid ").Append(pid.ToString(CultureInfo.InvariantCulture));
            if (e.Comm is not null)
            {
                sb.Append(" (").Append(Printable(e.Comm)).Append(')');
            }
        }

        if (e.Detail is not null && e.Op != ChangeOp.Lost)
        {
            sb.Append("  [").Append(Printable(e.Detail)).Append(']');
        }
        else if (e.Detail is not null)
        {
            sb.Append(Printable(e.Detail));
        }

        sb.Append("  #").Append(e.Seq.ToString(CultureInfo.InvariantCulture));
        return sb.ToString();
    }

    /// <summary>A line of the text timeline; a burst of writes says how many and over how long, and its first and last event.</summary>
    public static string Line(FoldedEvent f, bool colour = false)
    {
        var line = Line(f.IsBurst ? f.First with { Size = f.Last.Size, Offset = null, Length = null } : f.First, colour);
        if (!f.IsBurst)
        {
            return line;
        }

        var seq = "  #" + f.First.Seq.ToString(CultureInfo.InvariantCulture);
        return string.Concat(line.AsSpan(0, line.Length - seq.Length), string.Create(CultureInfo.InvariantCulture,
            $"  x{f.Count} writes{(f.Bytes is { } bytes ? ", " + FormatSize(bytes) : "")} in {TimeSpec.FormatDuration(f.Last.TimeNs - f.First.TimeNs)}  #{f.First.Seq}-#{f.Last.Seq}"));
    }

    public static void Json(Utf8JsonWriter j, SessionInfo s, EventRecord e)
    {
        j.WriteStartObject();
        j.WriteNumber("session", s.Id);
        j.WriteNumber("seq", e.Seq);
        j.WriteNumber("time_ns", e.TimeNs);
        j.WriteString("time", TimeSpec.FormatDuration(e.TimeNs));
        j.WriteString("wall", DateTimeOffset.UnixEpoch.AddTicks((s.StartedWallNs + e.TimeNs) / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture));
        j.WriteString("op", e.Op.Name());
        JsonPath.Write(j, "path", e.Path);
        JsonPath.Write(j, "path2", e.Path2);
        if (e.Size is { } size)
        {
            j.WriteNumber(e.Op == ChangeOp.Exit ? "exit_code" : "size", size);
            if (e.Op == ChangeOp.Exit)
            {
                j.WriteNull("size");
            }
        }
        else
        {
            j.WriteNull("size");
        }

        if (e.Pid is { } pid)
        {
            j.WriteNumber("pid", pid);
        }
        else
        {
            j.WriteNull("pid");
        }

        WriteNullable(j, "comm", e.Comm);
        WriteNullable(j, "detail", e.Detail);
        WriteNullable(j, "offset", e.Offset);
        WriteNullable(j, "length", e.Length);
        j.WriteEndObject();
    }

    private static void WriteNullable(Utf8JsonWriter j, string name, long? value)
    {
        if (value is { } v)
        {
            j.WriteNumber(name, v);
        }
        else
        {
            j.WriteNull(name);
        }
    }

    private static void WriteNullable(Utf8JsonWriter j, string name, string? value)
    {
        if (value is null)
        {
            j.WriteNull(name);
        }
        else
        {
            j.WriteString(name, value);
        }
    }

    public static string FormatSize(long bytes) => ByteSize.Format(bytes);
}
