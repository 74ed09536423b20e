using System.Globalization;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// inotify in `record` stops watching IN_MODIFY of a directory for a short window once a file in it is written in a
/// burst (InotifySource.CoalesceWrites). The file is held open the whole time, so no IN_CLOSE_WRITE helps: the
/// state after each burst must still be recorded, because the source reports the hot file again when the window
/// ends and the recorder reads it then.
/// </summary>
public sealed class WriteBurstTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void A_file_held_open_and_written_in_bursts_is_recorded_as_it_was_after_each_burst()
    {
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        var trace = _dir.Sub("trace");
        var gaps = new List<(long MidWallNs, SortedDictionary<string, Entry> Truth)>();
        using (var rec = new RecordedSession(_dir.Path, trace, work))
        {
            using (var log = new FileStream(Path.Combine(work, "app.log"), FileMode.Append, FileAccess.Write, FileShare.ReadWrite, 1))
            {
                for (var burst = 0; burst < 3; burst++)
                {
                    for (var i = 0; i < 5000; i++)
                    {
                        log.Write(System.Text.Encoding.ASCII.GetBytes($"burst {burst} line {i:D5} ........................................\n"));
                    }

                    // Also a file of the same directory written once and closed while the directory is muted.
                    File.WriteAllText(Path.Combine(work, $"closed-{burst}.txt"), $"after burst {burst}");
                    var truth = TreeSnapshot.Take(work);
                    Thread.Sleep(600); // well past the mute window (50 ms) and the recorder's hold
                    gaps.Add((WallNs() - 300_000_000, truth));
                }
            }

            var (exit, stderr) = rec.Finish();
            Assert.True(exit == 0, stderr);
        }

        var n = 0;
        foreach (var (mid, truth) in gaps)
        {
            var at = DateTimeOffset.UnixEpoch.AddTicks(mid / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture);
            var outDir = _dir.Sub($"out-{n++}");
            Cli.Ok(_dir.Path, "export", "--trace", trace, "--time", at, "--out", outDir);
            TreeSnapshot.AssertSame(truth, TreeSnapshot.Take(outDir), $"export in the quiet gap after burst {n}");
        }

        var writes = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", trace, "--json", "--path", "app.log"));
        Assert.InRange(writes.Count, 3, 200); // 15,000 writes, recorded as a handful of versions
    }

    [Fact]
    public void A_temp_file_written_in_a_burst_and_renamed_at_once_has_no_event_after_its_rename()
    {
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        var trace = _dir.Sub("trace");
        using (var rec = new RecordedSession(_dir.Path, trace, work))
        {
            for (var round = 0; round < 5; round++)
            {
                // The save-then-rename pattern of editors and databases, inside one mute window.
                var temp = Path.Combine(work, $"state-{round}.tmp");
                using (var f = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.ReadWrite, 1))
                {
                    for (var i = 0; i < 2000; i++)
                    {
                        f.Write(System.Text.Encoding.ASCII.GetBytes($"round {round} record {i}\n"));
                    }
                }

                File.Move(temp, Path.Combine(work, $"state-{round}"));
                Thread.Sleep(200);
            }

            var (exit, stderr) = rec.Finish();
            Assert.True(exit == 0, stderr);
        }

        var events = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", trace, "--json"));
        for (var round = 0; round < 5; round++)
        {
            var temp = $"state-{round}.tmp";
            var renamed = events.FindIndex(e => e.GetProperty("op").GetString() == "RENAME" && e.GetProperty("path").GetString() == temp);
            Assert.True(renamed >= 0, $"no RENAME of {temp}");
            Assert.DoesNotContain(events.Skip(renamed + 1), e => e.GetProperty("path").GetString() == temp);
        }

        var outDir = _dir.Sub("out");
        Cli.Ok(_dir.Path, "export", "--trace", trace, "--out", outDir);
        TreeSnapshot.AssertSame(TreeSnapshot.Take(_dir.Sub("work")), TreeSnapshot.Take(outDir), "export at the end");
    }

    private static long WallNs() => (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100;
}
