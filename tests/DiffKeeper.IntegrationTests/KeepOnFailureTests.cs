using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `record --keep on-failure`: a run that fails keeps everything; a run that passes keeps its summary and timeline
/// but not its file contents, whose bytes leave the packs, while what other sessions share with it stays.
/// </summary>
public sealed class KeepOnFailureTests : IDisposable
{
    private readonly TempDir _dir = new();

    public KeepOnFailureTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private long PackBytes() => Directory.EnumerateFiles(Trace, "*", SearchOption.AllDirectories)
        .Where(f => !Path.GetFileName(f).StartsWith("catalog.db", StringComparison.Ordinal) && !Path.GetFileName(f).StartsWith("LOCK", StringComparison.Ordinal))
        .Sum(f => new FileInfo(f).Length);

    [Fact]
    public void A_passing_run_keeps_its_timeline_and_drops_its_contents_and_a_failing_run_keeps_both()
    {
        var shared = new byte[300_000];
        new Random(14).NextBytes(shared);
        File.WriteAllBytes(Path.Combine(Work, "shared.bin"), shared);

        // Session 1 fails: kept whole.
        var failing = Cli.Run(Work, "record", "-q", "--keep", "on-failure", "--capture", "inotify", "--trace", Trace, "--",
            "sh", "-c", "echo failed > result.txt; exit 3");
        Assert.Equal(3, failing.ExitCode);
        var before = PackBytes();

        // Session 2 passes and writes 2 MB of new bytes: none of them stay.
        var passing = Cli.Run(Work, "record", "--json", "--keep", "on-failure", "--capture", "inotify", "--trace", Trace, "--",
            "sh", "-c", "head -c 2000000 /dev/urandom > big.bin; echo passed > result.txt");
        Assert.True(passing.ExitCode == 0, passing.ToString());
        var summary = JsonDocument.Parse(passing.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single()).RootElement;
        Assert.Equal(2, summary.GetProperty("session").GetInt64());
        Assert.False(summary.GetProperty("contents_kept").GetBoolean());
        Assert.True(PackBytes() < before + 500_000, $"packs grew from {before} to {PackBytes()} bytes although session 2's contents were dropped");

        // Its summary and timeline stay.
        var listed = Cli.Ok(Work, "sessions", "--trace", Trace).Lines;
        Assert.Contains("exit status 0, not kept", Assert.Single(listed, l => l.Contains("passed > result.txt", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.DoesNotContain("not kept", Assert.Single(listed, l => l.Contains("failed > result.txt", StringComparison.Ordinal)), StringComparison.Ordinal);
        Assert.Equal([true, false], Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Select(j => j.GetProperty("contents_kept").GetBoolean()));
        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace, "--session", "2", "--no-fold").Stdout;
        Assert.Contains("big.bin", timeline, StringComparison.Ordinal);
        Assert.Contains("EXIT", timeline, StringComparison.Ordinal);

        // A moment of it says why its contents are gone, in one line, exit 12; nothing is written.
        var output = _dir.Sub("export-2");
        var export = Cli.Run(Work, "export", "--trace", Trace, "--session", "2", "--out", output);
        Assert.Equal(12, export.ExitCode);
        var line = Assert.Single(export.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("diffkeeper: session 2's file contents were not kept: the command succeeded", line, StringComparison.Ordinal);
        Assert.False(Directory.Exists(output) && Directory.EnumerateFileSystemEntries(output).Any());
        Assert.Equal(12, Cli.Run(Work, "show", "--trace", Trace, "--session", "2", "--time", "start", "shared.bin").ExitCode);

        // The failing run, which shares shared.bin's blobs with the dropped baseline, still rebuilds, and the trace verifies.
        var kept = _dir.Sub("export-1");
        Cli.Ok(Work, "export", "--trace", Trace, "--session", "1", "--out", kept);
        Assert.Equal(shared, File.ReadAllBytes(Path.Combine(kept, "shared.bin")));
        Assert.Equal("failed\n", File.ReadAllText(Path.Combine(kept, "result.txt")));
        Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");

        // The default keeps a passing run.
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo again > result.txt");
        Cli.Ok(Work, "export", "--trace", Trace, "--session", "3", "--out", _dir.Sub("export-3"));
        Assert.Equal("again\n", File.ReadAllText(Path.Combine(_dir.Sub("export-3"), "result.txt")));
    }

    [Fact]
    public void An_unknown_keep_value_is_a_usage_error_and_records_nothing()
    {
        var r = Cli.Run(Work, "record", "--keep", "sometimes", "--trace", Trace, "--", "true");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("diffkeeper: ", r.Stderr, StringComparison.Ordinal);
        Assert.False(Directory.Exists(Trace));
    }
}
