using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

[CollectionDefinition("inotify limits", DisableParallelization = true)]
public sealed class InotifyLimitsCollection;

/// <summary>
/// inotify drops events when its queue overflows. The recorder must say so (a LOST event, the session's lost count)
/// and rescan, so the final state is still exact. The queue is made tiny for this test's recorder by lowering
/// fs.inotify.max_queued_events while it starts (the kernel reads it at inotify_init), then restoring it.
/// </summary>
[Collection("inotify limits")]
public sealed class OverflowTests : IDisposable
{
    private const string QueueLimit = "/proc/sys/fs/inotify/max_queued_events";
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void An_overflow_is_a_LOST_event_followed_by_a_rescan_and_the_end_state_is_exact()
    {
        string original;
        try
        {
            original = File.ReadAllText(QueueLimit).Trim();
            File.WriteAllText(QueueLimit, "16");
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            Assert.Skip($"needs root to lower {QueueLimit} for the test's recorder: {e.Message}");
            return;
        }

        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        File.WriteAllText(Path.Combine(work, "before.txt"), "before");
        var trace = _dir.Sub("trace");
        RecordedSession rec;
        try
        {
            rec = new RecordedSession(_dir.Path, trace, work);
        }
        finally
        {
            File.WriteAllText(QueueLimit, original);
        }

        using (rec)
        {
            // One process creating thousands of files in microseconds each: far faster than a 16-event queue drains.
            var psi = new System.Diagnostics.ProcessStartInfo("sh")
            {
                WorkingDirectory = work,
                ArgumentList = { "-c", "mkdir -p burst/a burst/b && cd burst/a && seq 1 3000 | xargs touch && cd ../b && seq 1 3000 | xargs touch" },
            };
            using (var burst = System.Diagnostics.Process.Start(psi)!)
            {
                burst.WaitForExit();
                Assert.Equal(0, burst.ExitCode);
            }

            for (var f = 0; f < 200; f++)
            {
                File.WriteAllText(Path.Combine(work, $"written-{f}.txt"), $"content {f}");
            }

            File.Delete(Path.Combine(work, "before.txt"));
            var truth = TreeSnapshot.Take(work);
            Assert.Equal(0, rec.Finish().ExitCode);

            var timeline = Cli.Ok(_dir.Path, "timeline", "--trace", trace).Lines;
            Assert.Contains(timeline, l => l.Contains("LOST", StringComparison.Ordinal) && l.Contains("rescanning", StringComparison.Ordinal));
            var session = Cli.JsonLines(Cli.Ok(_dir.Path, "sessions", "--trace", trace, "--json")).Single();
            Assert.True(session.GetProperty("lost_events").GetInt64() > 0);

            var outDir = _dir.Sub("out");
            Cli.Ok(_dir.Path, "export", "--trace", trace, "--out", outDir);
            TreeSnapshot.AssertSame(truth, TreeSnapshot.Take(outDir), "export after an inotify overflow");
        }
    }
}
