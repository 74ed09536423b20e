using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `record --max-trace-size`: the trace stays under the size as a ring (oldest contents dropped first, every event
/// kept, a dropped moment's export says so with exit 12); when the ring cannot keep it under (the newest version of a
/// file alone is bigger), the recording stops storing, the command runs on unharmed, and the session ends with LOST
/// and EXIT while everything committed before stays. Real recordings (inotify, which needs no privilege), real files.
/// </summary>
public sealed class MaxTraceSizeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public MaxTraceSizeTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    /// <summary>Every byte of the trace directory's files, as `du --apparent-size` counts them.</summary>
    private long TraceBytes() => Directory.EnumerateFiles(Trace, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    private string TraceFiles() => string.Join(", ", Directory.EnumerateFiles(Trace, "*", SearchOption.AllDirectories)
        .Select(f => $"{Path.GetRelativePath(Trace, f)} {new FileInfo(f).Length}"));

    [Fact]
    public void The_ring_keeps_the_trace_under_its_size_drops_the_oldest_contents_first_and_keeps_every_event()
    {
        File.WriteAllText(Path.Combine(Work, "before.txt"), "there before\n");

        // 16 versions of a 512 KB file that does not compress (8 MB in all) into a 4 MiB trace, a quarter of a second apart.
        var run = Cli.Run(Work, "record", "--json", "--capture", "inotify", "--max-trace-size", "4M", "--trace", Trace, "--",
            "bash", "-c", "for i in $(seq 1 16); do head -c 512000 /dev/urandom > data.bin; echo $i > step.txt; sleep 0.25; done; exit 3");
        Assert.True(run.ExitCode == 3, run.ToString());
        var summary = JsonDocument.Parse(run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1]).RootElement;
        Assert.True(summary.GetProperty("lost_events").GetInt64() == 0, $"the ring did not keep up (load: {File.ReadAllText("/proc/loadavg").Trim()}; trace files: {TraceFiles()}): {run}");
        Assert.True(TraceBytes() <= 4 << 20, $"the trace takes {TraceBytes()} bytes, over its limit of {4 << 20}");

        // Every event is in the timeline: as many as the summary counted, numbered without a gap, EXIT last.
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        Assert.Equal(summary.GetProperty("events").GetInt64(), events.Count);
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.GetProperty("seq").GetInt64()));
        Assert.Equal("EXIT", events[^1].GetProperty("op").GetString());

        // The oldest contents went first: data.bin's history keeps its newest versions, one run of them.
        var versions = JsonDocument.Parse(Cli.Ok(Work, "log", "--trace", Trace, "--json", "data.bin").Stdout).RootElement
            .GetProperty("versions").EnumerateArray().Where(v => v.GetProperty("kind").GetString() == "file" && v.GetProperty("size").GetInt64() > 0).ToList();
        Assert.False(versions[^1].GetProperty("pruned").GetBoolean());
        Assert.True(versions[0].GetProperty("pruned").GetBoolean());
        Assert.All(versions.SkipWhile(v => v.GetProperty("pruned").GetBoolean()), v => Assert.False(v.GetProperty("pruned").GetBoolean()));

        // A moment whose content went says so, one line, exit 12, and writes nothing; `show` too.
        var gone = versions[0].GetProperty("seq").GetInt64();
        var output = _dir.Sub("gone");
        var export = Cli.Run(Work, "export", "--trace", Trace, "--time", $"#{gone}", "--out", output);
        Assert.True(export.ExitCode == 12, export.ToString());
        var line = Assert.Single(export.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"diffkeeper: data.bin at event #{gone} of session 1: its content was dropped to keep the trace under its size limit " +
                          "(--max-trace-size 4 MiB, oldest contents first)", line, StringComparison.Ordinal);
        Assert.False(Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any());
        Assert.Equal(12, Cli.Run(Work, "show", "--trace", Trace, "--time", $"#{gone}", "data.bin").ExitCode);

        // The baseline file, never changed, is its path's newest version: it stays. The newest state is whole.
        Cli.Ok(Work, "export", "--trace", Trace, "--time", "start", "--out", _dir.Sub("start"));
        Assert.Equal("there before\n", File.ReadAllText(Path.Combine(_dir.Sub("start"), "before.txt")));
        var end = _dir.Sub("end");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", end);
        Assert.Equal(File.ReadAllBytes(Path.Combine(Work, "data.bin")), File.ReadAllBytes(Path.Combine(end, "data.bin")));
        Assert.Equal("16\n", File.ReadAllText(Path.Combine(end, "step.txt")));
        Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");

        // A second session into the full trace makes room from the first one's oldest contents, and stays under too.
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--max-trace-size", "4M", "--trace", Trace, "--",
            "bash", "-c", "for i in 1 2 3 4; do head -c 512000 /dev/urandom > data.bin; sleep 0.25; done");
        Assert.True(TraceBytes() <= 4 << 20, $"after a second session the trace takes {TraceBytes()} bytes");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", _dir.Sub("end-2"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Work, "data.bin")), File.ReadAllBytes(Path.Combine(_dir.Sub("end-2"), "data.bin")));
    }

    [Fact]
    public void When_the_ring_cannot_make_room_the_recording_stops_storing_and_the_command_runs_on()
    {
        File.WriteAllText(Path.Combine(Work, "before.txt"), "there before\n");

        // The newest version of a path is never dropped: a 3 MB file cannot fit into 1 MiB.
        var run = Cli.Run(Work, "record", "--capture", "inotify", "--max-trace-size", "1M", "--trace", Trace, "--",
            "bash", "-c", "echo one > small.txt; sleep 0.3; head -c 3000000 /dev/urandom > big.bin; sleep 0.3; echo done > after.txt; exit 5");
        Assert.True(run.ExitCode == 5, run.ToString());
        Assert.Equal("done\n", File.ReadAllText(Path.Combine(Work, "after.txt"))); // the command ran to its end
        var stop = Assert.Single(run.Stderr.Split('\n'), l => l.Contains("size limit", StringComparison.Ordinal));
        Assert.StartsWith("diffkeeper: cannot store more of this recording: the trace reached its size limit (--max-trace-size 1 MiB", stop, StringComparison.Ordinal);
        Assert.Contains("the command runs on", stop, StringComparison.Ordinal);
        Assert.True(TraceBytes() <= 1 << 20, $"the trace takes {TraceBytes()} bytes, over its limit of {1 << 20}");

        // The session ends with LOST saying why, then EXIT with the command's status.
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        Assert.Equal("EXIT", events[^1].GetProperty("op").GetString());
        Assert.Equal(5, events[^1].GetProperty("exit_code").GetInt32());
        var lost = events[^2];
        Assert.Equal("LOST", lost.GetProperty("op").GetString());
        Assert.Contains("the trace reached its size limit (--max-trace-size 1 MiB", lost.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(1, Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Single().GetProperty("lost_events").GetInt64());

        // Nothing committed before is lost: the baseline and the first write still export, and the trace verifies.
        var start = _dir.Sub("start");
        Cli.Ok(Work, "export", "--trace", Trace, "--time", "start", "--out", start);
        Assert.Equal("there before\n", File.ReadAllText(Path.Combine(start, "before.txt")));
        var small = events.First(e => e.GetProperty("path").GetString() == "small.txt").GetProperty("seq").GetInt64();
        Assert.Equal("one\n", Cli.Ok(Work, "show", "--trace", Trace, "--time", $"#{small}", "small.txt").Stdout);
        Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");
    }

    [Fact]
    public void Without_compaction_the_ring_still_keeps_the_trace_under_its_size()
    {
        var run = Cli.Run(Work, "record", "--json", "--no-compact", "--capture", "inotify", "--max-trace-size", "2M", "--trace", Trace, "--",
            "bash", "-c", "for i in $(seq 1 8); do head -c 400000 /dev/urandom > data.bin; sleep 0.25; done");
        Assert.True(run.ExitCode == 0, run.ToString());
        var summary = JsonDocument.Parse(run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1]).RootElement;
        Assert.True(summary.GetProperty("lost_events").GetInt64() == 0, $"the ring did not keep up (load: {File.ReadAllText("/proc/loadavg").Trim()}; trace files: {TraceFiles()}): {run}");
        Assert.Equal(JsonValueKind.Null, summary.GetProperty("pack_bytes_after_compaction").ValueKind);
        Assert.True(TraceBytes() <= 2 << 20, $"the trace takes {TraceBytes()} bytes, over its limit of {2 << 20}");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", _dir.Sub("end"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Work, "data.bin")), File.ReadAllBytes(Path.Combine(_dir.Sub("end"), "data.bin")));
    }

    [Theory]
    [InlineData("abc", "--max-trace-size expects a size such as 64M, 1G or a number of bytes, got 'abc'")]
    [InlineData("512K", "--max-trace-size must be at least 1M (an empty trace's catalog takes about 100K), got '512K'")]
    [InlineData("0", "--max-trace-size expects a size such as 64M, 1G or a number of bytes, got '0'")]
    public void A_bad_size_is_a_usage_error_and_records_nothing(string size, string message)
    {
        var run = Cli.Run(Work, "record", "--max-trace-size", size, "--trace", Trace, "--", "touch", "made");
        Assert.Equal(2, run.ExitCode);
        Assert.StartsWith($"diffkeeper: {message}", Assert.Single(run.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)), StringComparison.Ordinal);
        Assert.False(File.Exists(Path.Combine(Work, "made")));
        Assert.False(Directory.Exists(Trace));
    }
}
