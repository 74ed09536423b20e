using System.Diagnostics;
using System.Globalization;
using System.Net.Http;
using System.Security.Cryptography;
using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// `run --max-versions` and `--retain`: while the app keeps rewriting a file, older versions are pruned and the
/// store collected in the background; the store keeps verifying, shrinks against a run without retention, restores
/// the latest state, and survives a SIGKILL of the agent in the middle of a retention pass.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed partial class RetentionTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly HttpClient _http = new();

    public void Dispose()
    {
        _http.Dispose();
        _dir.Dispose();
    }

    [GeneratedRegex(@"^diffkeeper: metrics on http://(\S+)/metrics$", RegexOptions.Multiline)]
    private static partial Regex MetricsLine();

    private sealed record Workload(string State, string Store, string Expected, string Done, string Release);

    private Workload Paths(string name)
    {
        var w = new Workload(_dir.Sub(name + "-data"), _dir.Sub(name + "-store"), _dir.Sub(name + "-expected"), _dir.Sub(name + "-done"), _dir.Sub(name + "-release"));
        Directory.CreateDirectory(w.State);
        return w;
    }

    /// <summary>`run [options] -- retention_writer.py`, started in its own process group; <paramref name="seedForm"/> leaves out the command name.</summary>
    private static KeepProcess Start(Workload w, string[] options, int count, int size, string mode, double interval, bool seedForm = false)
    {
        string[] head = seedForm ? [$"--state-dir={w.State}", $"--store={w.Store}"] : ["run", "--state-dir", w.State, "--store", w.Store];
        return KeepProcess.StartDiffKeeper(Path.GetDirectoryName(w.State)!, [.. head, .. options, "--", "python3",
            SqliteSurvivesKillTests.Script("retention_writer.py"), w.State, $"{count}", $"{size}", mode,
            interval.ToString(CultureInfo.InvariantCulture), w.Expected, w.Done, w.Release]);
    }

    private static string MetricsAddress(KeepProcess run)
    {
        var sw = Stopwatch.StartNew();
        while (MetricsLine().Match(run.Stderr) is not { Success: true } m)
        {
            Assert.False(run.Process.HasExited, run.Stderr);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), "no metrics line:\n" + run.Stderr);
            Thread.Sleep(5);
        }

        return MetricsLine().Match(run.Stderr).Groups[1].Value;
    }

    /// <summary>One scrape of /metrics: every sample without labels, by name.</summary>
    private Dictionary<string, double> Scrape(string address)
    {
        var text = _http.GetStringAsync(new Uri($"http://{address}/metrics"), TestContext.Current.CancellationToken).GetAwaiter().GetResult();
        return text.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#') && !l.Contains('{', StringComparison.Ordinal))
            .ToDictionary(l => l[..l.IndexOf(' ', StringComparison.Ordinal)], l => double.Parse(l[(l.IndexOf(' ', StringComparison.Ordinal) + 1)..], CultureInfo.InvariantCulture));
    }

    private double Metric(string address, string name) => Scrape(address)[name];

    private static void WaitFor(Func<bool> condition, KeepProcess run, string what, double seconds = 20)
    {
        var sw = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.False(run.Process.HasExited, $"run exited before {what}:\n{run.Stderr}");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(seconds), $"not {what} within {seconds} s:\n{run.Stderr}");
            Thread.Sleep(10);
        }
    }

    /// <summary>The versions of state.bin that `log` shows with content, and those it shows pruned.</summary>
    private (int Kept, int Pruned) Versions(string store)
    {
        var lines = Cli.Ok(_dir.Path, "log", "--trace", store, "state.bin").Lines;
        return (lines.Count(l => l.Contains(" content ", StringComparison.Ordinal)), lines.Count(l => l.Contains(" pruned (", StringComparison.Ordinal)));
    }

    /// <summary>Runs the app to the end: its last version written, <paramref name="until"/> true (when given), then released.</summary>
    private static void Finish(KeepProcess run, Workload w, Func<bool>? until = null, string what = "")
    {
        WaitFor(() => File.Exists(w.Done), run, "the app's last version");
        if (until is not null)
        {
            WaitFor(until, run, what);
        }

        File.WriteAllText(w.Release, "");
        Assert.True(run.WaitForExit(TimeSpan.FromSeconds(60)) == 0, run.Stderr);
    }

    private void AssertVerifiesAndRestores(string store, byte[] expected)
    {
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", store, "--read-data").Stdout);
        var restored = _dir.Sub("restored-" + Guid.NewGuid().ToString("N"));
        Cli.Ok(_dir.Path, "restore", "--state-dir", restored, "--store", store);
        Assert.Equal(expected, File.ReadAllBytes(Path.Combine(restored, "state.bin")));
    }

    [Fact]
    public void Max_versions_2_keeps_two_versions_of_a_rewritten_file_and_the_store_shrinks()
    {
        const int Size = 256 << 10;
        var kept = Paths("kept");
        using (var run = Start(kept, ["--max-versions", "2", "--retention-interval", "200ms", "--metrics-addr", "none"], 30, Size, "random", 0.03))
        {
            // Two versions of state.bin (the last one's bytes are shared by state.tmp's) and pack headers: the packs
            // shrink to that in the background, while the app still runs. Only file sizes are read meanwhile: a
            // reader would make a pass leave the freed files for the next one.
            Finish(run, kept, () => StoreFiles.PackBytes(kept.Store) < 3 * Size, "packs below 3 versions");
            Assert.Contains("diffkeeper: retention: ", run.Stderr);
        }

        var all = Paths("all");
        using (var run = Start(all, ["--metrics-addr", "none"], 30, Size, "random", 0.03))
        {
            Finish(run, all);
        }

        var (versions, pruned) = Versions(kept.Store);
        Assert.InRange(versions, 1, 2);
        Assert.True(pruned >= 10, $"{pruned} versions pruned"); // writes 30 ms apart may share a cut on a loaded machine
        var (allVersions, allPruned) = Versions(all.Store);
        Assert.Equal(0, allPruned);
        Assert.True(allVersions >= 10, $"{allVersions} versions without retention");
        var (keptBytes, allBytes) = (StoreFiles.PackBytes(kept.Store), StoreFiles.PackBytes(all.Store));
        Assert.True(keptBytes < allBytes / 5, $"{keptBytes} bytes with --max-versions 2, {allBytes} without");
        AssertVerifiesAndRestores(kept.Store, File.ReadAllBytes(kept.Expected));
    }

    [Fact]
    public void Retain_prunes_versions_older_than_the_window_but_never_the_newest_in_the_seed_form()
    {
        var w = Paths("retain");
        using var run = Start(w, ["--retain=1s", "--max-versions=50", "--retention-interval=200ms", "--metrics-addr=127.0.0.1:0"], 12, 64 << 10, "edit", 0.02, seedForm: true);
        var metrics = MetricsAddress(run);
        WaitFor(() => File.Exists(w.Done), run, "the app's last version");
        // Every version but the newest is more than a second old once a pass has run after this point.
        Thread.Sleep(1200);
        WaitFor(() => Versions(w.Store).Kept == 1, run, "one version left");
        // Writes 20 ms apart may share a cut: fewer than 12 versions were stored, each but the newest pruned.
        var pruned = Versions(w.Store).Pruned;
        Assert.True(pruned >= 5, $"{pruned} versions of state.bin pruned");
        Assert.True(Metric(metrics, "diffkeeper_pruned_versions_total") >= pruned);
        File.WriteAllText(w.Release, "");
        Assert.True(run.WaitForExit(TimeSpan.FromSeconds(60)) == 0, run.Stderr);
        AssertVerifiesAndRestores(w.Store, File.ReadAllBytes(w.Expected));
    }

    /// <summary>
    /// The crash script (write, kill, recover, check, write more): the agent alone is SIGKILLed while a retention
    /// pass runs (prune marks, sweeps, compaction and repack steps committing between cuts); the store must open,
    /// verify and restore one whole version the app wrote; the next `run` restores it and goes on.
    /// </summary>
    [Fact]
    public void Sigkill_of_the_agent_during_a_retention_pass_leaves_a_store_that_opens_verifies_and_restores()
    {
        var w = Paths("kill");
        var rng = new Random(7);
        for (var i = 0; i < 6; i++)
        {
            if (i > 0)
            {
                Directory.Delete(w.State, recursive: true); // the pod's emptyDir is gone: `run` restores first
            }

            using (var run = Start(w, ["--max-versions", "3", "--retention-interval", "100ms", "--metrics-addr", "127.0.0.1:0"], 0, 1 << 20, "edit", 0.02))
            {
                var metrics = MetricsAddress(run);
                if (i > 0)
                {
                    Assert.Contains($"restored session {i} into", run.Stderr);
                }

                // Killed during a pass: at a random moment of it, or right after one of its steps committed (the
                // pass may be encoding or copying the next step's records then).
                var passes = 1 + rng.Next(3);
                WaitFor(() => Metric(metrics, "diffkeeper_gc_runs_total") >= passes, run, $"{passes} retention passes");
                var steps = Metric(metrics, "diffkeeper_gc_steps_total") + (i % 2 == 0 ? 0 : 1 + rng.Next(10));
                WaitFor(() => Scrape(metrics) is var m && m["diffkeeper_gc_running"] == 1 && m["diffkeeper_gc_steps_total"] >= steps, run, "a retention pass running");
                Native.Interop.Libc.Kill(run.Process.Id, 9);
                run.Process.WaitForExit(10_000);
                run.KillGroup(); // the app outlived its agent
                run.WaitGroupGone();
            }

            Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", w.Store, "--read-data").Stdout);
            var restored = _dir.Sub($"restored-{i}");
            Cli.Ok(_dir.Path, "restore", "--state-dir", restored, "--store", w.Store);
            var bytes = File.ReadAllBytes(Path.Combine(restored, "state.bin"));
            Assert.Equal(bytes[^32..], SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32)));
        }

        // The next writer opens the store (cutting torn tails, deleting packs no row names) and records on.
        Directory.Delete(w.State, recursive: true);
        using (var last = Start(w, ["--max-versions", "3", "--retention-interval", "100ms", "--metrics-addr", "none"], 3, 1 << 20, "edit", 0.02))
        {
            Finish(last, w);
        }

        AssertVerifiesAndRestores(w.Store, File.ReadAllBytes(w.Expected));
    }
}
