using System.Globalization;
using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Report;

/// <summary>What bounds a report's size. The file holds at most <see cref="MaxLines"/> timeline lines,
/// <see cref="MaxVersions"/> versions (<see cref="MaxVersionsPerPath"/> of one path: its first and last half), and
/// <see cref="MaxContentBytes"/> of file contents (each version's up to <see cref="MaxFileBytes"/>), plus the page
/// itself (~35 KiB): about 25 MiB at most.</summary>
public sealed record ReportLimits(int MaxLines, int MaxVersions, int MaxVersionsPerPath, long MaxFileBytes, long MaxContentBytes)
{
    public static ReportLimits Default { get; } = new(20_000, 50_000, 200, 256 << 10, 8 << 20);
}

/// <summary>What a report holds, for the command's summary line.</summary>
public sealed record ReportSummary(int Lines, int OmittedLines, int Paths, int Versions, int Contents, int OmittedContents, long Bytes);

/// <summary>
/// Writes one self-contained HTML file for a session: the page (inline CSS and JavaScript, a Content-Security-Policy
/// that forbids every network request) and the session's data as one JSON document in a script element: the folded
/// timeline (first and last <see cref="ReportLimits.MaxLines"/>/2 lines when longer, the gap said), every path's
/// versions, the text or the first 4 KiB of each file version's bytes (deduplicated by content id, within the
/// limits), and for binary versions the byte ranges changed since the path's previous version. Text diffs between
/// any two versions are computed in the page. Nothing is fetched; the file opens from disk in any browser.
/// </summary>
public static class HtmlReport
{
    private const string DataMarker = "<!--DK-DATA-->";
    private const int HighlightedLines = 5;

    public static ReportSummary Write(TraceReader reader, SessionInfo session, Stream output, ReportLimits limits)
    {
        var (prefix, suffix) = Template();
        var counting = new CountingStream(output);
        counting.Write(prefix);
        counting.Write("<script id=\"dk-data\" type=\"application/json\">"u8);
        ReportSummary summary;
        using (var j = new Utf8JsonWriter(counting))
        {
            summary = WriteData(j, reader, session, limits);
        }

        counting.Write("</script>\n"u8);
        counting.Write(suffix);
        counting.Flush();
        return summary with { Bytes = counting.Written };
    }

    private static ReportSummary WriteData(Utf8JsonWriter j, TraceReader reader, SessionInfo s, ReportLimits limits)
    {
        using var snapshot = reader.Snapshot();
        var lines = FoldedEvent.Fold(reader.Events(s)).ToList();
        var omitted = 0;
        var omittedAfterSeq = 0L;
        if (lines.Count > limits.MaxLines)
        {
            var head = limits.MaxLines / 2;
            omitted = lines.Count - limits.MaxLines;
            omittedAfterSeq = lines[head - 1].Last.Seq;
            lines.RemoveRange(head, omitted);
        }

        j.WriteStartObject();
        j.WriteNumber("format", 1);
        j.WriteString("generated", DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture));
        j.WriteString("trace", reader.TraceDir);
        WriteSession(j, s);

        j.WriteStartObject("omitted");
        j.WriteNumber("lines", omitted);
        j.WriteNumber("after_seq", omittedAfterSeq);
        j.WriteEndObject();

        // [seq, last_seq, count, time_ns, last_time_ns, op, path, path2, size, pid, comm, detail, offset, length, bytes]:
        // offset and length of a single write an exact backend recorded, bytes the byte total of a burst whose every
        // length is known; null when not known (inotify, fanotify, a trace before format 4), never a guess.
        j.WriteStartArray("events");
        foreach (var f in lines)
        {
            var e = f.First;
            j.WriteStartArray();
            j.WriteNumberValue(e.Seq);
            j.WriteNumberValue(f.Last.Seq);
            j.WriteNumberValue(f.Count);
            j.WriteNumberValue(e.TimeNs);
            j.WriteNumberValue(f.Last.TimeNs);
            j.WriteStringValue(e.Op.Name());
            StringOrNull(j, e.Path is null ? null : PathText.Of(e.Path));
            StringOrNull(j, e.Path2 is null ? null : PathText.Of(e.Path2));
            NumberOrNull(j, f.Last.Size);
            NumberOrNull(j, e.Pid);
            StringOrNull(j, e.Comm);
            StringOrNull(j, e.Detail);
            NumberOrNull(j, f.IsBurst ? null : e.Offset);
            NumberOrNull(j, f.IsBurst ? null : e.Length);
            NumberOrNull(j, f.IsBurst ? f.Bytes : null);
            j.WriteEndArray();
        }

        j.WriteEndArray();

        j.WriteStartArray("highlight");
        if (s.ExitCode is { } code && code != 0)
        {
            foreach (var f in lines.Where(f => f.First.Op is not ChangeOp.Exit and not ChangeOp.Lost).TakeLast(HighlightedLines))
            {
                j.WriteNumberValue(f.First.Seq);
            }
        }

        j.WriteEndArray();

        var contents = new ContentBudget(reader, s, limits);
        var versions = reader.VersionsIn(s)
            .GroupBy(v => PathText.Of(TraceReader.DisplayPath(s, v.RootId, v.Rel)), StringComparer.Ordinal)
            .OrderBy(g => g.Key, StringComparer.Ordinal)
            .ToList();
        var versionCount = 0;
        var versionBudget = limits.MaxVersions;
        j.WriteStartArray("files");
        foreach (var path in versions)
        {
            var all = path.OrderBy(v => v.Id).ToList();
            var (kept, gap) = Keep(all, Math.Min(limits.MaxVersionsPerPath, versionBudget));
            versionBudget -= kept.Count;
            j.WriteStartObject();
            j.WriteString("path", path.Key);
            j.WriteStartArray("versions");
            VersionRecord? previous = null;
            foreach (var v in kept)
            {
                versionCount++;
                WriteVersion(j, reader, s, path.Key, previous, v, contents);
                previous = v;
            }

            j.WriteEndArray();
            if (gap is { } g)
            {
                // The page shows no content for a moment inside the gap rather than an older version's.
                j.WriteStartObject("omitted");
                j.WriteNumber("count", all.Count - kept.Count);
                j.WriteNumber("from_seq", g.FromSeq);
                j.WriteNumber("before_seq", g.BeforeSeq);
                j.WriteEndObject();
            }

            j.WriteEndObject();
        }

        j.WriteEndArray();
        contents.WriteAll(j);
        j.WriteEndObject();
        return new ReportSummary(lines.Count, omitted, versions.Count, versionCount, contents.Stored, contents.Omitted, 0);
    }

    /// <summary>
    /// At most <paramref name="max"/> of a path's versions: the first and the last half, and the gap between them as
    /// the seq of the first version left out and of the first kept after it (long.MaxValue when none is).
    /// </summary>
    private static (List<VersionRecord> Kept, (long FromSeq, long BeforeSeq)? Gap) Keep(List<VersionRecord> all, int max)
    {
        if (all.Count <= max)
        {
            return (all, null);
        }

        var head = (max + 1) / 2;
        var tail = max - head;
        var kept = all.Take(head).Concat(all.TakeLast(tail)).ToList();
        return (kept, (all[head].Seq, tail == 0 ? long.MaxValue : all[^tail].Seq));
    }

    private static void WriteSession(Utf8JsonWriter j, SessionInfo s)
    {
        j.WriteStartObject("session");
        j.WriteNumber("id", s.Id);
        j.WriteString("command", s.Command);
        j.WriteString("cwd", s.Cwd);
        j.WriteString("capture", s.Capture);
        j.WriteString("started", s.StartedWall.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture));
        j.WriteString("state", s.State);
        NumberOrNull(j, "exit_code", s.ExitCode);
        NumberOrNull(j, "ended_ns", s.EndedNs);
        j.WriteNumber("lost_events", s.LostEvents);
        j.WriteStartArray("roots");
        foreach (var r in s.Roots)
        {
            j.WriteStringValue(PathText.Of(r.Path));
        }

        j.WriteEndArray();
        j.WriteEndObject();
    }

    private static void WriteVersion(Utf8JsonWriter j, TraceReader reader, SessionInfo s, string path, VersionRecord? previous, VersionRecord v, ContentBudget contents)
    {
        j.WriteStartObject();
        j.WriteNumber("seq", v.Seq);
        j.WriteNumber("time_ns", v.TimeNs);
        j.WriteString("kind", v.Kind switch
        {
            EntryKind.File => "file",
            EntryKind.Directory => "directory",
            EntryKind.Symlink => "symlink",
            _ => "absent",
        });
        j.WriteString("mode", Convert.ToString(v.Mode & 0xFFF, 8).PadLeft(4, '0'));
        j.WriteNumber("size", v.Size);
        j.WriteNumber("mtime_ns", v.MtimeNs);
        StringOrNull(j, "target", v.Target is null ? null : PathText.Of(v.Target));
        if (v.Kind == EntryKind.File)
        {
            var key = contents.Add(v);
            StringOrNull(j, "content", key);
            if (v.Pruned)
            {
                j.WriteBoolean("pruned", true);
            }

            if (previous is { Kind: EntryKind.File } && contents.IsBinary(key) && contents.IsBinary(ContentBudget.KeyOf(previous)))
            {
                WriteRanges(j, ContentComparison.Of(reader, s, s, new EntryChange(path, previous, v)));
            }
        }

        j.WriteEndObject();
    }

    private static void WriteRanges(Utf8JsonWriter j, ContentComparison c)
    {
        if (c.Difference != ContentDifference.Binary)
        {
            return;
        }

        j.WriteStartArray("ranges");
        foreach (var (offset, length) in c.Ranges)
        {
            j.WriteStartArray();
            j.WriteNumberValue(offset);
            j.WriteNumberValue(length);
            j.WriteEndArray();
        }

        j.WriteEndArray();
        j.WriteNumber("range_count", c.RangeCount);
        j.WriteNumber("range_bytes", c.RangeBytes);
    }

    private static void StringOrNull(Utf8JsonWriter j, string? value)
    {
        if (value is null)
        {
            j.WriteNullValue();
        }
        else
        {
            j.WriteStringValue(value);
        }
    }

    private static void StringOrNull(Utf8JsonWriter j, string name, string? value)
    {
        j.WritePropertyName(name);
        StringOrNull(j, value);
    }

    private static void NumberOrNull(Utf8JsonWriter j, long? value)
    {
        if (value is null)
        {
            j.WriteNullValue();
        }
        else
        {
            j.WriteNumberValue(value.Value);
        }
    }

    private static void NumberOrNull(Utf8JsonWriter j, string name, long? value)
    {
        j.WritePropertyName(name);
        NumberOrNull(j, value);
    }

    private static (byte[] Prefix, byte[] Suffix) Template()
    {
        using var stream = typeof(HtmlReport).Assembly.GetManifestResourceStream("DiffKeeper.Report.report.html")
            ?? throw new InvalidOperationException("the report template is not embedded in this build");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        var bytes = copy.ToArray();
        var at = bytes.AsSpan().IndexOf(System.Text.Encoding.UTF8.GetBytes(DataMarker));
        if (at < 0)
        {
            throw new InvalidOperationException($"the report template lacks {DataMarker}");
        }

        return (bytes[..at], bytes[(at + DataMarker.Length)..]);
    }

    private sealed class CountingStream(Stream inner) : Stream
    {
        public long Written { get; private set; }

        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => Written;

        public override long Position { get => Written; set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            inner.Write(buffer);
            Written += buffer.Length;
        }
    }
}
