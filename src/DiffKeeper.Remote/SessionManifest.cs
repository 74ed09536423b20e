using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Remote;

/// <summary>
/// The small object that makes a session visible (docs/store-format.md, "Remote stores": manifest). Written in
/// format 3 (compressed fields in a JSON envelope); formats 1 and 2 (plain JSON) are read as well.
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
    /// <summary>
    /// The dictionary format-3 manifests are compressed with (docs/store-format.md, "Remote stores": manifest): the
    /// field names and usual values, so a manifest costs little more than its hashes and numbers. Never changes.
    /// </summary>
    public static ReadOnlySpan<byte> Dictionary => """
        "interrupted""recording""fanotify""inotify""scan"null{"state":"finished","ended_ns":,"exit_code":,"command":"","host":"","capture":"ebpf","roots":["/"],"events":,"segment":"","segment_size":,"segment_base":"","packs":[""],"uploaded_bytes":0}
        """u8;

    private const int Format = 3;
    private const int MaxFieldsLength = 1 << 20;

    /// <summary>The manifest object (format 3): the fields, compressed, in a JSON envelope older readers refuse by its format.</summary>
    public byte[] ToJson()
    {
        var fields = Fields();
        var frame = new byte[Zstd.CompressBound(fields.Length)];
        var n = Zstd.CompressWithPrefix(fields, Dictionary, frame, level: 19);
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("format", Format);
            w.WriteBase64String("zstd", frame.AsSpan(0, n));
            w.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>
    /// The fields of a format-3 manifest, uncompressed: those of format 2 but format, key, generation (its name
    /// gives them) and started_wall_ns (the key's first 20 digits).
    /// </summary>
    internal byte[] Fields()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = false }))
        {
            w.WriteStartObject();
            w.WriteString("state", State);
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

    /// <summary>
    /// Reads a manifest object of format 1, 2 or 3 named <paramref name="objectName"/> (a format-3 manifest takes
    /// its key and generation from that name: <c>sessions/&lt;key&gt;/&lt;gen&gt;.json</c>, or
    /// <c>forgotten/&lt;key&gt;.json</c> with generation 0). Damage is exit 5 naming it; a newer format, exit 9.
    /// </summary>
    public static SessionManifest Parse(string objectName, byte[] json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var o = doc.RootElement;
            var format = o.GetProperty("format").GetInt32();
            if (format is not (1 or 2 or 3))
            {
                throw new DiffKeeperException(Core.ExitCode.UnsupportedFormat, $"{objectName} has a manifest format newer than this diffkeeper reads; upgrade diffkeeper");
            }

            if (format < 3)
            {
                return Read(o, o.GetProperty("key").GetString()!, o.GetProperty("generation").GetInt64());
            }

            var (key, generation) = NameOf(objectName);
            using var fields = JsonDocument.Parse(Decompress(o.GetProperty("zstd").GetBytesFromBase64()));
            return Read(fields.RootElement, key, generation);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new DiffKeeperException(Core.ExitCode.Corrupt, $"the manifest {objectName} is damaged ({e.Message})", e);
        }
    }

    private static (string Key, long Generation) NameOf(string objectName)
    {
        if (RemoteLayout.ParseManifest(objectName) is { } name)
        {
            return name;
        }

        var file = objectName[(objectName.LastIndexOf('/') + 1)..];
        return objectName.StartsWith(RemoteLayout.ForgottenPrefix, StringComparison.Ordinal) && file.EndsWith(".json", StringComparison.Ordinal)
            ? (file[..^5], 0)
            : throw new FormatException("its name is neither sessions/<key>/<gen>.json nor forgotten/<key>.json");
    }

    private static long StartOf(string key) =>
        key.Length > 20 && key[20] == '-' && long.TryParse(key.AsSpan(0, 20), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var ns)
            ? ns
            : throw new FormatException($"the key {key} does not start with 20 digits");

    private static byte[] Decompress(byte[] frame)
    {
        if (Zstd.FrameContentSize(frame) is not { } size || size > MaxFieldsLength)
        {
            throw new FormatException("its zstd frame has no valid content size");
        }

        var fields = new byte[size];
        return Zstd.TryDecompressWithPrefix(frame, Dictionary, fields, out var error) ? fields : throw new FormatException(error);
    }

    private static SessionManifest Read(JsonElement o, string key, long generation)
    {
        static long? Nullable(JsonElement e) => e.ValueKind == JsonValueKind.Null ? null : e.GetInt64();
        var segment = o.GetProperty("segment").GetString()!;
        var packs = o.GetProperty("packs").EnumerateArray().Select(p => p.GetString()!).ToList();
        var segmentBase = o.TryGetProperty("segment_base", out var b) ? b.GetString() : null;
        if (!IsSha(segment) || !packs.All(IsSha) || (segmentBase is not null && !IsSha(segmentBase)))
        {
            throw new FormatException("a segment or pack name is not a SHA-256");
        }

        return new SessionManifest(
            key,
            generation,
            o.GetProperty("state").GetString()!,
            o.TryGetProperty("started_wall_ns", out var started) ? started.GetInt64() : StartOf(key),
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

    private static bool IsSha(string s) => s.Length == 64 && s.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'));
}
