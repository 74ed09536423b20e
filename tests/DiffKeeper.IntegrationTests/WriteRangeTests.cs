using System.Text.Json;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Each write's offset and length (store format 4): exact under eBPF, in `timeline --json`, the text lines (a burst
/// with its byte total) and the Chrome trace's args; unknown (null) under inotify and in a format-3 trace, which a
/// recording migrates.
/// </summary>
public sealed class WriteRangeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public WriteRangeTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    // dd: one write(2) of 4096 bytes at 8192, one of 100 at 300, then 20 writes of 512 bytes back to back.
    private const string Script =
        "dd if=/dev/zero of=data.bin bs=4096 count=1 seek=2 status=none; sleep 0.2; " +
        "dd if=/dev/zero of=data.bin bs=100 count=1 seek=3 conv=notrunc status=none; sleep 0.2; " +
        "dd if=/dev/zero of=burst.bin bs=512 count=20 status=none";

    private static void SkipUnlessEbpf()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("the eBPF backend needs root (CAP_BPF and CAP_PERFMON); this test runs as " + Environment.UserName);
        }

        if (!File.Exists("/sys/kernel/btf/vmlinux"))
        {
            Assert.Skip("this kernel has no BTF (/sys/kernel/btf/vmlinux), which the eBPF backend needs");
        }
    }

    private List<JsonElement> Json(params string[] args) =>
        Cli.Ok(Work, ["timeline", "--trace", Trace, "--json", .. args]).Lines.Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    private string[] Text(params string[] args) => Cli.Ok(Work, ["timeline", "--trace", Trace, .. args]).Lines;

    private static List<JsonElement> Writes(List<JsonElement> events, string path) =>
        events.Where(e => e.GetProperty("op").GetString() == "WRITE" && e.GetProperty("path").GetString() == path).ToList();

    private static long? Number(JsonElement e, string name) =>
        e.GetProperty(name).ValueKind == JsonValueKind.Null ? null : e.GetProperty(name).GetInt64();

    [Fact]
    public void Ebpf_records_each_writes_offset_and_length_and_a_burst_folds_with_its_byte_total()
    {
        SkipUnlessEbpf();
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", Script);

        var all = Json();
        Assert.Equal([(8192L, 4096L), (300L, 100L)], Writes(all, "data.bin").Select(e => (Number(e, "offset")!.Value, Number(e, "length")!.Value)));
        var burst = Writes(all, "burst.bin");
        Assert.Equal(Enumerable.Range(0, 20).Select(i => ((long?)i * 512, (long?)512)), burst.Select(e => (Number(e, "offset"), Number(e, "length"))));
        Assert.All(all.Where(e => e.GetProperty("op").GetString() != "WRITE"), e => Assert.Equal(JsonValueKind.Null, e.GetProperty("length").ValueKind));

        var text = Text();
        Assert.Contains(text, l => l.Contains("WRITE    data.bin  4 KiB at 8192 → 12 KiB", StringComparison.Ordinal));
        Assert.Contains(text, l => l.Contains("WRITE    data.bin  100 B at 300 → 12 KiB", StringComparison.Ordinal));
        var folded = Assert.Single(text, l => l.Contains("WRITE    burst.bin", StringComparison.Ordinal));
        Assert.Contains("x20 writes, 10 KiB in ", folded, StringComparison.Ordinal);
        var expanded = Text("--no-fold").Where(l => l.Contains("WRITE    burst.bin", StringComparison.Ordinal)).ToList();
        Assert.Equal(20, expanded.Count);
        Assert.Contains("512 B at 9728 → 10 KiB", expanded[^1], StringComparison.Ordinal);

        using var chrome = JsonDocument.Parse(Cli.Ok(Work, "timeline", "--trace", Trace, "--format", "chrome-trace").Stdout);
        var events = chrome.RootElement.GetProperty("traceEvents").EnumerateArray().Where(e => e.GetProperty("ph").GetString() != "M").ToList();
        var single = events.Where(e => e.GetProperty("args").TryGetProperty("path", out var p) && p.GetString() == "data.bin" && e.GetProperty("name").GetString()!.StartsWith("WRITE", StringComparison.Ordinal))
            .Select(e => (e.GetProperty("args").GetProperty("offset").GetInt64(), e.GetProperty("args").GetProperty("length").GetInt64()));
        Assert.Equal([(8192L, 4096L), (300L, 100L)], single);
        var x = Assert.Single(events, e => e.GetProperty("ph").GetString() == "X");
        Assert.Equal(20, x.GetProperty("args").GetProperty("count").GetInt32());
        Assert.Equal(10240, x.GetProperty("args").GetProperty("bytes").GetInt64());
    }

    [Fact]
    public void Inotify_leaves_offsets_and_lengths_unknown_and_a_burst_says_only_its_count()
    {
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", Script);
        var all = Json();
        Assert.NotEmpty(Writes(all, "data.bin"));
        Assert.All(all, e =>
        {
            Assert.Equal(JsonValueKind.Null, e.GetProperty("offset").ValueKind);
            Assert.Equal(JsonValueKind.Null, e.GetProperty("length").ValueKind);
        });
        Assert.DoesNotContain(Text(), l => l.Contains(" at ", StringComparison.Ordinal) || l.Contains("writes, ", StringComparison.Ordinal));
    }

    [Fact]
    public void A_format_3_trace_reads_with_unknown_offsets_and_a_recording_into_it_migrates_it()
    {
        SkipUnlessEbpf();
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", "echo one > a.txt");
        // Make it the trace the format-3 code wrote: no events.offset or events.length.
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false))
        {
            db.Execute("ALTER TABLE events DROP COLUMN offset; ALTER TABLE events DROP COLUMN length; DROP INDEX roots_by_session; ALTER TABLE roots DROP COLUMN paths_root; " +
                "ALTER TABLE sessions DROP COLUMN baseline_from; UPDATE meta SET value = '3' WHERE key = 'format_version'");
        }

        var old = Json();
        Assert.NotEmpty(Writes(old, "a.txt"));
        Assert.All(old, e => Assert.Equal(JsonValueKind.Null, e.GetProperty("offset").ValueKind));
        Assert.Contains(Text(), l => l.Contains("WRITE    a.txt", StringComparison.Ordinal));
        Cli.Ok(Work, "verify", "--trace", Trace);

        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", "printf 12345 > b.txt");
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true))
        using (var v = db.Prepare("SELECT value FROM meta WHERE key = 'format_version'"))
        {
            Assert.True(v.Step());
            Assert.Equal("6", v.StringOrNull(0)); // 3 -> 4 -> 5 -> 6
        }

        Assert.All(Json("--session", "1"), e => Assert.Equal(JsonValueKind.Null, e.GetProperty("length").ValueKind));
        var b = Assert.Single(Writes(Json("--session", "2"), "b.txt"));
        Assert.Equal((0L, 5L), (Number(b, "offset")!.Value, Number(b, "length")!.Value));
        Cli.Ok(Work, "verify", "--trace", Trace);
    }
}
