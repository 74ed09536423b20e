using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`record` killed with SIGKILL: the trace opens, verifies and exports states the workload really wrote.</summary>
public sealed class CrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static string Content(int file, int generation) =>
        string.Concat(Enumerable.Repeat($"file {file} generation {generation}\n", generation % 40 + 1));

    [Fact]
    public void A_recorder_killed_mid_run_leaves_a_trace_that_opens_verifies_and_exports_real_states()
    {
        var work = _dir.Sub("work");
        var trace = _dir.Sub("trace");
        Directory.CreateDirectory(work);
        var written = new Dictionary<string, HashSet<string>>();
        using (var rec = new RecordedSession(_dir.Path, trace, work, "--exclude", "*.tmp"))
        {
            var child = rec.ChildPid();
            var deadline = DateTime.UtcNow.AddSeconds(1.5);
            var killAt = DateTime.UtcNow.AddSeconds(0.8 + Random.Shared.NextDouble() * 0.5);
            var killed = false;
            for (var g = 0; DateTime.UtcNow < deadline; g++)
            {
                for (var f = 0; f < 8; f++)
                {
                    // Each state is published whole by rename, so every state on disk is one the workload wrote.
                    var name = $"f{f}.txt";
                    var content = Content(f, g);
                    File.WriteAllText(Path.Combine(work, name + ".tmp"), content);
                    File.Move(Path.Combine(work, name + ".tmp"), Path.Combine(work, name), overwrite: true);
                    (written.TryGetValue(name, out var set) ? set : written[name] = []).Add(content);
                }

                if (!killed && DateTime.UtcNow >= killAt)
                {
                    rec.Process.Kill(); // SIGKILL, no cleanup
                    killed = true;
                }
            }

            Assert.True(rec.Process.WaitForExit(10_000));
            Assert.Equal(137, rec.Process.ExitCode);
            if (child is { } pid)
            {
                try
                {
                    System.Diagnostics.Process.GetProcessById(pid).Kill();
                }
                catch (ArgumentException)
                {
                }
            }
        }

        var timeline = Cli.Ok(_dir.Path, "timeline", "--trace", trace);
        Assert.Contains("no exit status yet", timeline.Stdout);
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", trace).Stdout);
        var outDir = _dir.Sub("out");
        Cli.Ok(_dir.Path, "export", "--trace", trace, "--time", "end", "--out", outDir);
        var exported = Directory.GetFiles(outDir);
        Assert.NotEmpty(exported);
        foreach (var file in exported)
        {
            var name = Path.GetFileName(file);
            Assert.True(written.ContainsKey(name), $"export invented {name}");
            Assert.Contains(File.ReadAllText(file), written[name]);
        }

        // The next recording into the same trace marks the killed session interrupted and works normally.
        File.WriteAllText(Path.Combine(work, "after.txt"), "after the crash");
        var again = Cli.Run(work, "record", "--trace", trace, "--watch", work, "--", "sh", "-c", "echo more >> after.txt");
        Assert.True(again.ExitCode == 0, again.ToString());
        var sessions = Cli.Ok(_dir.Path, "sessions", "--trace", trace).Lines;
        Assert.Equal(2, sessions.Length);
        Assert.Contains("interrupted", sessions[0]);
        Cli.Ok(_dir.Path, "verify", "--trace", trace);
        Assert.Equal("after the crashmore\n", Cli.Ok(_dir.Path, "show", "--trace", trace, "after.txt").Stdout);
        Assert.Contains(Cli.Ok(_dir.Path, "show", "--trace", trace, "--session", "1", "f0.txt").Stdout, written["f0.txt"]);
    }
}
