using System.Globalization;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// The flight recorder's main promise: a workload in phases separated by quiet gaps, and `export` at the middle of
/// every gap (by duration, by RFC 3339 time and by #seq) equals the ground truth byte for byte, with modes,
/// mtimes and symlink targets.
/// </summary>
public sealed class PhasedWorkloadTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string W => _dir.Sub("work");

    private string P(string rel) => Path.Combine(W, rel);

    private static long WallNs() => (DateTimeOffset.UtcNow.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) * 100;

    [Fact]
    public void Export_at_the_middle_of_every_gap_equals_the_ground_truth()
    {
        Directory.CreateDirectory(P("pre/sub"));
        File.WriteAllText(P("pre/a.txt"), "existed before recording\n");
        File.WriteAllBytes(P("pre/b.bin"), RandomBytes(100_000, 1));
        File.SetUnixFileMode(P("pre/b.bin"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
        File.CreateSymbolicLink(P("pre/link"), "a.txt");
        File.WriteAllText(P("pre/sub/c.txt"), "c");

        var trace = _dir.Sub("trace");
        var gaps = new List<(long MidWallNs, SortedDictionary<string, Entry> Truth, string Name)>();
        using var rec = new RecordedSession(_dir.Path, trace, W);

        void Gap(string name, int ms = 1000)
        {
            var truth = TreeSnapshot.Take(W);
            Thread.Sleep(ms / 2);
            gaps.Add((WallNs(), truth, name));
            Thread.Sleep(ms / 2);
        }

        Gap("baseline");

        Directory.CreateDirectory(P("a/b/c"));
        File.WriteAllText(P("a/1.txt"), "one\n");
        File.WriteAllText(P("a/b/2.txt"), "two\n");
        File.WriteAllText(P("a/b/c/3.txt"), "three\n");
        Gap("nested creates");

        for (var i = 0; i < 20; i++)
        {
            File.AppendAllText(P("a/1.txt"), $"append {i}\n");
        }

        File.WriteAllText(P("a/b/2.txt"), "TWO\n");
        File.WriteAllText(P("pre/a.txt"), "overwritten, and longer than before\n");
        Gap("appends and overwrites");

        using (var f = File.OpenHandle(P("a/b/c/3.txt"), FileMode.Open, FileAccess.Write))
        {
            RandomAccess.SetLength(f, 2);
        }

        using (var f = File.OpenHandle(P("pre/b.bin"), FileMode.Open, FileAccess.Write))
        {
            RandomAccess.SetLength(f, 10);
        }

        using (var f = File.OpenHandle(P("a/sparse.bin"), FileMode.CreateNew, FileAccess.Write))
        {
            RandomAccess.Write(f, "tail"u8, 5 << 20);
        }

        Gap("truncates");

        File.Move(P("a/1.txt"), P("a/one.txt"));
        Directory.Move(P("a/b"), P("a/bee"));
        File.WriteAllText(P("a/bee/c/after-move.txt"), "written into the moved directory\n");
        Directory.Move(P("pre/sub"), P("moved-sub"));
        Gap("renames");

        File.Delete(P("pre/a.txt"));
        File.Delete(P("a/bee/c/3.txt"));
        File.SetUnixFileMode(P("a/one.txt"), UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.SetUnixFileMode(P("a/bee"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        Directory.CreateDirectory(P("empty/inner"));
        Directory.Delete(P("moved-sub"), recursive: true);
        Gap("deletes and chmods");

        File.CreateSymbolicLink(P("s-file"), "a/one.txt");
        File.CreateSymbolicLink(P("s-dir"), "a/bee");
        File.CreateSymbolicLink(P("s-dangling"), "/nonexistent/target");
        File.Delete(P("pre/link"));
        File.CreateSymbolicLink(P("pre/link"), "b.bin");
        Gap("symlinks");

        for (var d = 0; d < 100; d++)
        {
            Directory.CreateDirectory(P($"many/{d:D2}"));
            for (var f = 0; f < 100; f++)
            {
                File.WriteAllText(P($"many/{d:D2}/{f:D2}.txt"), $"small file {d}/{f}\n");
            }
        }

        Gap("10,000 small files", 2500);

        var big = RandomBytes(50 << 20, 2);
        File.WriteAllBytes(P("big.bin"), big);
        Gap("50 MiB file", 2500);

        using (var f = File.OpenHandle(P("big.bin"), FileMode.Open, FileAccess.Write))
        {
            RandomAccess.Write(f, RandomBytes(1 << 20, 3), 20 << 20);
        }

        for (var d = 0; d < 50; d++)
        {
            Directory.Delete(P($"many/{d:D2}"), recursive: true);
        }

        Directory.Move(P("many"), P("many-renamed"));
        Gap("big edit, mass delete, rename of a big directory", 2500);

        var (exit, stderr) = rec.Finish();
        Assert.True(exit == 0, stderr);

        var session = Cli.JsonLines(Cli.Ok(_dir.Path, "sessions", "--trace", trace, "--json")).Single();
        var startNs = session.GetProperty("started_wall_ns").GetInt64();
        var events = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", trace, "--json"));
        Assert.Equal("EXIT", events[^1].GetProperty("op").GetString());
        Assert.All(events, e => Assert.Equal(JsonValueKindNull, e.GetProperty("pid").ValueKind));

        var failures = new List<string>();
        var n = 0;
        foreach (var (mid, truth, name) in gaps)
        {
            var since = mid - startNs;
            var seq = events.Where(e => e.GetProperty("time_ns").GetInt64() <= since).Select(e => e.GetProperty("seq").GetInt64()).DefaultIfEmpty(0).Max();
            var rfc = DateTimeOffset.UnixEpoch.AddTicks(mid / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture);
            var duration = (since / 1e9).ToString("0.#########", CultureInfo.InvariantCulture) + "s";
            foreach (var t in new[] { duration, rfc, $"#{seq}" })
            {
                var outDir = _dir.Sub($"out-{n++}");
                Cli.Ok(_dir.Path, "export", "--trace", trace, "--time", t, "--out", outDir);
                try
                {
                    TreeSnapshot.AssertSame(truth, TreeSnapshot.Take(outDir), $"gap '{name}' exported at --time {t}");
                }
                catch (Xunit.Sdk.XunitException e)
                {
                    failures.Add(e.Message);
                }

                Directory.Delete(outDir, true);
            }
        }

        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }

    private const System.Text.Json.JsonValueKind JsonValueKindNull = System.Text.Json.JsonValueKind.Null;

    private static byte[] RandomBytes(int n, int seed)
    {
        var b = new byte[n];
        new Random(seed).NextBytes(b);
        return b;
    }
}
