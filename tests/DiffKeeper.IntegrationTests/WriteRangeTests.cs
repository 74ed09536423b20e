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
    internal const string Script =
        "dd if=/dev/zero of=data.bin bs=4096 count=1 seek=2 status=none; sleep 0.2; " +
        "dd if=/dev/zero of=data.bin bs=100 count=1 seek=3 conv=notrunc status=none; sleep 0.2; " +
        "dd if=/dev/zero of=burst.bin bs=512 count=20 status=none";

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
        EbpfSupport.SkipUnlessAvailable();
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

    // util-linux fallocate: an allocation past the end (mode 0: the file grows to 72 KiB), one with --keep-size (-n, KEEP_SIZE: it
    // stays 72 KiB), a punched hole (-p), then a write. Then one process allocates g and writes it twice at once.
    internal const string FallocateScript =
        "fallocate -o 8192 -l 65536 f; fallocate --keep-size -o 131072 -l 4096 f; fallocate -p -o 8192 -l 4096 f; printf abc | dd of=f bs=3 seek=100 conv=notrunc status=none; " +
        "python3 -c \"import os; fd = os.open('g', os.O_RDWR | os.O_CREAT); os.posix_fallocate(fd, 0, 4096); os.pwrite(fd, b'ab', 0); os.pwrite(fd, b'cd', 2)\"";

    internal static void SkipUnlessFallocate(string dir)
    {
        var probe = Path.Combine(dir, ".fallocate-probe");
        var (code, output) = DiffKeeper.Replay.Tests.LoopMount.Run("sh", "-c", $"fallocate -l 4096 '{probe}' && fallocate --keep-size -o 8192 -l 4096 '{probe}' && fallocate -p -o 0 -l 4096 '{probe}'; r=$?; rm -f '{probe}'; exit $r");
        if (code != 0)
        {
            Assert.Skip($"util-linux fallocate (allocate, --keep-size, punch a hole) does not work in {dir}: {output.Trim()}");
        }
    }

    [Fact]
    public void Ebpf_records_the_range_of_an_allocating_fallocate_with_and_without_keep_size()
    {
        EbpfSupport.SkipUnlessAvailable();
        SkipUnlessFallocate(Work);
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", FallocateScript);

        var writes = Writes(Json(), "f");
        Assert.Equal([(8192L, 65536L, 73728L, "fallocate"), (131072L, 4096L, 73728L, "fallocate"), (8192L, 4096L, 73728L, "punch hole"), (300L, 3L, 73728L, null)],
            writes.Select(e => (Number(e, "offset")!.Value, Number(e, "length")!.Value, Number(e, "size")!.Value, e.GetProperty("detail").GetString())));
        var text = Text();
        var f = text.Where(l => l.Contains("WRITE    f ", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, f.Count);
        Assert.Contains("64 KiB at 8192 → 72 KiB", f[0], StringComparison.Ordinal);
        Assert.Contains("4 KiB at 131072 → 72 KiB", f[1], StringComparison.Ordinal);
        Assert.Contains("[fallocate]", f[1], StringComparison.Ordinal);

        // An allocation is not a write of its length: it never folds into a burst, whose byte total counts writes.
        var g = text.Where(l => l.Contains("WRITE    g ", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, g.Count);
        Assert.Contains("4 KiB at 0 → 4 KiB", g[0], StringComparison.Ordinal);
        Assert.Contains("x2 writes, 4 B in ", g[1], StringComparison.Ordinal);

        // The allocation's moment exports the file as it was: 72 KiB of zeros.
        var at = _dir.Sub("at-alloc");
        Cli.Ok(Work, "export", "--trace", Trace, "--time", "#" + writes[0].GetProperty("seq").GetInt64().ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", at);
        var bytes = File.ReadAllBytes(Path.Combine(at, "f"));
        Assert.Equal(73728, bytes.Length);
        Assert.All(bytes, b => Assert.Equal(0, b));
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
        EbpfSupport.SkipUnlessAvailable();
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", "echo one > a.txt");
        // Make it the trace the format-3 code wrote: no events.offset or events.length.
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: false))
        {
            db.Execute("ALTER TABLE events DROP COLUMN offset; ALTER TABLE events DROP COLUMN length; ALTER TABLE events DROP COLUMN run; DROP INDEX roots_by_session; ALTER TABLE roots DROP COLUMN paths_root; " +
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
            Assert.Equal("7", v.StringOrNull(0)); // 3 -> 4 -> 5 -> 6 -> 7
        }

        Assert.All(Json("--session", "1"), e => Assert.Equal(JsonValueKind.Null, e.GetProperty("length").ValueKind));
        var b = Assert.Single(Writes(Json("--session", "2"), "b.txt"));
        Assert.Equal((0L, 5L), (Number(b, "offset")!.Value, Number(b, "length")!.Value));
        Cli.Ok(Work, "verify", "--trace", Trace);
    }
}
