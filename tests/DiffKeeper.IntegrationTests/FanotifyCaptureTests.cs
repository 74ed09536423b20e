using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Not run beside other tests: a filesystem mark reports every process on the file system, and the other test
/// classes create hundreds of thousands of files on it. One of six full runs of the suite failed the first test
/// here while they ran (2026-11-22; its message was not kept, hence the timeline in every message now). Under
/// such load the reader falls behind: its queue of 16,384 events can overflow (LOST, then a rescan) and a process
/// can exit before its name is read. That is the backend's documented behaviour, not what these tests check.
/// </summary>
[CollectionDefinition("whole file system", DisableParallelization = true)]
public sealed class WholeFileSystemCollection;

/// <summary>The fanotify backend on the real kernel (needs root: a filesystem mark needs CAP_SYS_ADMIN).</summary>
[Collection("whole file system")]
public sealed class FanotifyCaptureTests : IDisposable
{
    private readonly TempDir _dir = new();

    public FanotifyCaptureTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    [Fact]
    public async Task Creates_writes_renames_and_deletes_are_recorded_with_pid_and_program_and_the_final_export_is_exact()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("fanotify filesystem marks need CAP_SYS_ADMIN; this test runs as " + Environment.UserName);
        }

        // gone/ is made and removed before its events are read: its handle must come from the CREATE cache.
        // The shell then waits until the test has seen RMDIR gone in the live timeline (not CHMOD: when the read of
        // d/b.txt after its rename lags, it finds mode 0600 already and no CHMOD follows). fanotify carries a
        // pid but no name, and the name is read from /proc when the event is read, so it is there only for a
        // process still alive then. mkdir, mv and rm exit at once and may go unnamed (README says so); the shell,
        // which made d/e/a.txt, is alive by construction. A CI run lost the shell's name when it exited first.
        var waited = System.Diagnostics.Stopwatch.StartNew();
        Cli.Result? live = null;
        using (var recording = RecordedSession.After(
            "mkdir -p d/e; echo one > d/e/a.txt; echo two >> d/e/a.txt; mv d/e/a.txt d/b.txt; echo x > gone.txt; rm gone.txt; " +
            "mkdir gone; echo y > gone/f; rm -r gone; chmod 600 d/b.txt", Work, Trace, Work, "--capture", "fanotify"))
        {
            while (!recording.Process.HasExited && waited.Elapsed < TimeSpan.FromMinutes(2))
            {
                live = Cli.Run(Work, "timeline", "--trace", Trace, "--json");
                if (live.ExitCode == 0 && Cli.JsonLines(live).Any(e => Op(e) == "RMDIR" && e.GetProperty("path").GetString() == "gone"))
                {
                    break;
                }

                await Task.Delay(50, TestContext.Current.CancellationToken);
            }

            var (exitCode, stderr) = recording.Finish();
            Assert.True(exitCode == 0, $"exit {exitCode}: {stderr}");
        }

        var seen = $"after {waited.Elapsed.TotalSeconds:F1} s of waiting for RMDIR gone in the live timeline: {live}";
        Assert.True(waited.Elapsed < TimeSpan.FromMinutes(2), seen); // a live timeline shows what was read
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        var shown = Cli.Ok(Work, "timeline", "--trace", Trace).Stdout + "\n" + seen; // what a failure prints
        Assert.True(events.Any(e => Op(e) == "RENAME" && e.GetProperty("path").GetString() == "d/e/a.txt" && e.GetProperty("path2").GetString() == "d/b.txt"), shown);
        Assert.True(events.Any(e => Op(e) == "DELETE" && e.GetProperty("path").GetString() == "gone.txt"), shown);
        Assert.True(events.Any(e => Op(e) == "RMDIR" && e.GetProperty("path").GetString() == "gone"), shown);
        Assert.True(events.Any(e => Op(e) == "CREATE" && e.GetProperty("path").GetString() == "d/e/a.txt"
            && e.GetProperty("pid").ValueKind == JsonValueKind.Number && e.GetProperty("comm").GetString() == "sh"), shown);
        Assert.False(events.Any(e => Op(e) == "LOST"), shown);
        var outDir = _dir.Sub("out");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", outDir);
        Assert.Equal("one\ntwo\n", File.ReadAllText(Path.Combine(outDir, "d/b.txt")));
        Assert.False(File.Exists(Path.Combine(outDir, "gone.txt")));
        Assert.False(Directory.Exists(Path.Combine(outDir, "gone")));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(outDir, "d/b.txt")));
        var session = Cli.JsonLines(Cli.Ok(Work, "sessions", "--trace", Trace, "--json")).Single();
        Assert.Equal("fanotify", session.GetProperty("capture").GetString());
    }

    private static string? Op(JsonElement e) => e.GetProperty("op").GetString();
}
