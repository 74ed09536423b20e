using System.Text.Json;
using DiffKeeper.Core;

namespace DiffKeeper.Remote;

/// <summary>
/// The small object that makes a session visible (docs/store-format.md, "Remote stores": manifest); format 2 when
/// its segment is a delta (<see cref="SegmentBase"/>).
/// </summary>
public sealed record SessionManifest(
    string Key,
    long Generation,
    string State,
    long StartedWallNs,
    long? EndedNs,
    int? ExitCode,
    string Command,
    string Host,
    string Capture,
    IReadOnlyList<string> Roots,
    long Events,
    string Segment,
    long SegmentSize,
    IReadOnlyList<string> Packs,
    long UploadedBytes,
    string? SegmentBase = null)
{
    public byte[] ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false }))
        {
            w.WriteStartObject();
            w.WriteNumber("format", SegmentBase is null ? 1 : 2);
            w.WriteString("key", Key);
            w.WriteNumber("generation", Generation);
            w.WriteString("state", State);
            w.WriteNumber("started_wall_ns", StartedWallNs);
            WriteNullable(w, "ended_ns", EndedNs);
            WriteNullable(w, "exit_code", ExitCode);
            w.WriteString("command", Command);
            w.WriteString("host", Host);
            w.WriteString("capture", Capture);
            WriteStrings(w, "roots", Roots);
            w.WriteNumber("events", Events);
            w.WriteString("segment", Segment);
            w.WriteNumber("segment_size", SegmentSize);
            if (SegmentBase is not null)
            {
                w.WriteString("segment_base", SegmentBase);
            }

            WriteStrings(w, "packs", Packs);
            w.WriteNumber("uploaded_bytes", UploadedBytes);
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    private static void WriteStrings(Utf8JsonWriter w, string name, IEnumerable<string> values)
    {
        w.WriteStartArray(name);
        foreach (var v in values)
        {
            w.WriteStringValue(v);
        }

        w.WriteEndArray();
    }

    private static void WriteNullable(Utf8JsonWriter w, string name, long? value)
    {
        if (value is { } v)
        {
            w.WriteNumber(name, v);
        }
        else
        {
            w.WriteNull(name);
        }
    }

    public static SessionManifest Parse(string objectName, byte[] json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var o = doc.RootElement;
            if (o.GetProperty("format").GetInt32() is not (1 or 2))
            {
                throw new DiffKeeperException(Core.ExitCode.UnsupportedFormat, $"{objectName} has a manifest format newer than this diffkeeper reads; upgrade diffkeeper");
            }

            static long? Nullable(JsonElement e) => e.ValueKind == JsonValueKind.Null ? null : e.GetInt64();
            var segment = o.GetProperty("segment").GetString()!;
            var packs = o.GetProperty("packs").EnumerateArray().Select(p => p.GetString()!).ToList();
            var segmentBase = o.TryGetProperty("segment_base", out var b) ? b.GetString() : null;
            if (!IsSha(segment) || !packs.All(IsSha) || (segmentBase is not null && !IsSha(segmentBase)))
            {
                throw new FormatException("a segment or pack name is not a SHA-256");
            }

            return new SessionManifest(
                o.GetProperty("key").GetString()!,
                o.GetProperty("generation").GetInt64(),
                o.GetProperty("state").GetString()!,
                o.GetProperty("started_wall_ns").GetInt64(),
                Nullable(o.GetProperty("ended_ns")),
                (int?)Nullable(o.GetProperty("exit_code")),
                o.GetProperty("command").GetString()!,
                o.GetProperty("host").GetString()!,
                o.GetProperty("capture").GetString()!,
                o.GetProperty("roots").EnumerateArray().Select(r => r.GetString()!).ToList(),
                o.GetProperty("events").GetInt64(),
                segment,
                o.GetProperty("segment_size").GetInt64(),
                packs,
                o.GetProperty("uploaded_bytes").GetInt64(),
                segmentBase);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new DiffKeeperException(Core.ExitCode.Corrupt, $"the manifest {objectName} is damaged ({e.Message})", e);
        }
    }

    private static bool IsSha(string s) => s.Length == 64 && s.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'));
}
