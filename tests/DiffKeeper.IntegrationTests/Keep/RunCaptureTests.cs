using System.Diagnostics;
using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// `run --capture ebpf|fanotify`: the freeze cut drains the ring buffer or the fanotify queue before it commits,
/// what was committed when the agent was stopped comes back after SIGKILL and a restart, and the timeline names
/// each change's process. Skipped, with the agent's own reason, where the backend cannot start here.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed class RunCaptureTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("ebpf")]
    [InlineData("fanotify")]
    public void The_state_committed_at_a_cut_comes_back_after_sigkill_with_pid_and_program_in_the_timeline(string backend)
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        // Each step appends i to log, then replaces n with i: in any state the app really had, log is 1..L and n
        // is L or L-1. It goes on from the log it finds; on SIGTERM (forwarded by the agent) it writes `last` and exits.
        var script = $"cd '{state}'; " + "i=0; [ -f log ] && i=$(wc -l < log); trap 'echo $i > last; exit 0' TERM; " +
                     "while :; do i=$((i+1)); echo $i >> log; echo $i > n.tmp; mv n.tmp n; sleep 0.002; done";
        string[] Run(string app) => ["run", "--capture", backend, "--state-dir", state, "--store", store, "--metrics-addr", "none",
            "--flush-interval", "50ms", "--", "sh", "-c", app];

        // 1. SIGKILL of the whole group mid-run: the store holds the last cut, a state the app really had. Without
        // the drain, a cut could read log at L while n's event is still in the kernel's queue: n older than L-1.
        using (var first = Start(Run(script)))
        {
            WaitFor(first, backend, state, 30);
            first.KillGroup();
            first.WaitGroupGone();
        }

        Directory.Delete(state, recursive: true);
        Assert.Contains("restored session 1", Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", store).Stderr);
        var killed = AssertCut(Snapshot(state));

        // 2. The next run goes on from there; SIGTERM: the app writes `last` and exits, the agent's last cut freezes,
        // drains and commits; then the group is killed as a node would kill the pod.
        using var second = Start(Run(script));
        WaitFor(second, backend, state, killed + 30);
        Native.Interop.Libc.Kill(second.Process.Id, 15);
        Assert.Equal(0, second.WaitForExit(TimeSpan.FromSeconds(30)));
        var committed = Snapshot(state);
        second.KillGroup();
        second.WaitGroupGone();
        Assert.Contains("kept session 2", second.Stderr);
        Assert.True(committed.ContainsKey("last"), second.Stderr);
        Assert.True(AssertCut(committed) > killed);

        // The volume is gone: a new run restores into an empty directory exactly what the cut at SIGTERM committed.
        Directory.Delete(state, recursive: true);
        var restarted = Cli.Run(_dir.Path, "run", "--capture", backend, "--state-dir", state, "--store", store,
            "--metrics-addr", "none", "--quiet", "--", "true");
        Assert.True(restarted.ExitCode == 0, restarted.Stderr);
        Assert.Contains("restored session 2", restarted.Stderr);
        Assert.Equal(committed, Snapshot(state));

        // Both recordings' timelines name the process of each change, as `record`'s do with this backend.
        foreach (var session in new[] { "1", "2" })
        {
            var events = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", store, "--session", session, "--json"));
            var ofLog = events.Where(e => e.GetProperty("path").GetString() == "log" && e.GetProperty("op").GetString() is "WRITE" or "CREATE").ToList();
            Assert.NotEmpty(ofLog);
            Assert.All(ofLog, e =>
            {
                Assert.True(e.GetProperty("pid").ValueKind == JsonValueKind.Number && e.GetProperty("pid").GetInt32() > 0, e.ToString());
                Assert.Equal("sh", e.GetProperty("comm").GetString());
            });
        }
    }

    private static KeepProcess Start(string[] args) => KeepProcess.StartDiffKeeper(Path.GetTempPath(), args);

    /// <summary>Waits until the app has written n; skips the test with the agent's own words when the backend cannot start here.</summary>
    private static void WaitFor(KeepProcess run, string backend, string state, int n)
    {
        var sw = Stopwatch.StartNew();
        while (ReadNumber(Path.Combine(state, "n")) < n)
        {
            if (run.Process.HasExited)
            {
                var code = run.WaitForExit(TimeSpan.FromSeconds(10));
                if (code == 10 && run.Stderr.Split('\n').FirstOrDefault(l => l.StartsWith("diffkeeper: ", StringComparison.Ordinal) &&
                                                                          l.Contains(backend, StringComparison.OrdinalIgnoreCase)) is { } line)
                {
                    Assert.Skip($"run --capture {backend} cannot start here: {line.Trim()}");
                }

                Assert.Fail($"run exited {code} early:\n{run.Stderr}");
            }

            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(20), run.Stderr);
            Thread.Sleep(10);
        }

        Thread.Sleep(60); // past a flush interval: a cut has committed since
    }

    /// <summary>Asserts the invariant of a state the app really had (log 1..L, n L or L-1); returns L.</summary>
    private static int AssertCut(Dictionary<string, string> files)
    {
        var lines = files["log"].Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse).ToList();
        Assert.Equal(Enumerable.Range(1, lines.Count), lines);
        Assert.InRange(int.Parse(files["n"].Trim()), lines[^1] - 1, lines[^1]);
        return lines[^1];
    }

    [Fact]
    public void A_bad_capture_value_is_a_one_line_usage_error()
    {
        var r = Cli.Run(_dir.Path, "run", "--capture", "scan", "--state-dir", _dir.Sub("data"), "--store", _dir.Sub("deltas"), "--", "true");
        Assert.Equal(2, r.ExitCode);
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("diffkeeper: ", line);
        Assert.Contains("--capture", line);
        Assert.Contains("auto, ebpf, fanotify, inotify", line);
        Assert.False(Directory.Exists(_dir.Sub("deltas")), "a usage error creates no store");
    }

    private static int ReadNumber(string path)
    {
        try
        {
            return int.TryParse(File.ReadAllText(path).Trim(), out var n) ? n : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    private static Dictionary<string, string> Snapshot(string dir) =>
        Directory.EnumerateFiles(dir).ToDictionary(f => Path.GetFileName(f), File.ReadAllText);
}
