using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// Traces on S3 (issue 16) against a real S3 server process (s3rver) on 127.0.0.1: many recorders into one
/// bucket, exact exports from it, dedup across sessions, and a server killed while a recording uploads.
/// </summary>
public sealed partial class RemoteStoreTests : IDisposable
{
    private readonly TempDir _tmp = new();

    /// <summary>
    /// Issue 16's acceptance runs 20 traces (DIFFKEEPER_S3_TRACES=20, ~50 s here); by default 8, within the suite's
    /// time budget: the first seeds the bucket, 4 processes record the rest at once.
    /// </summary>
    [Fact]
    public void TracesByFourConcurrentProcessesExportExactlyFromS3AndLaterSessionsUploadLittle()
    {
        var total = int.TryParse(System.Environment.GetEnvironmentVariable("DIFFKEEPER_S3_TRACES"), out var t) && t >= 2 ? t : 8;
        using var server = S3rverProcess.Start(_tmp.Sub("s3"));
        var url = $"s3://{S3rverProcess.Bucket}/ci";
        var snapshots = new Dictionary<string, SortedDictionary<string, Entry>>();
        var demo = DemoDir();

        // The first session seeds the bucket; then 4 processes record the other 19 at once.
        var first = Run(server.Environment(_tmp.Sub("cache-seed")), Seeded(demo, _tmp.Sub("work-seed")), "record", "--trace", url, "--", "bash", "flaky_test.sh");
        Assert.True(first.ExitCode == 1, first.ToString());
        snapshots[_tmp.Sub("work-seed")] = TreeSnapshot.Take(_tmp.Sub("work-seed"));
        var firstBytes = long.Parse(Uploaded().Match(first.Stderr).Groups[1].Value, CultureInfo.InvariantCulture);

        var later = new List<long>();
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, worker =>
        {
            for (var i = worker; i < total - 1; i += 4)
            {
                var work = _tmp.Sub($"work-w{worker}-{i}");
                Seeded(demo, work);
                var r = Run(server.Environment(_tmp.Sub($"cache-w{worker}")), work, "record", "--trace", url, "--", "bash", "flaky_test.sh");
                Assert.True(r.ExitCode == 1, r.ToString());
                lock (snapshots)
                {
                    snapshots[work] = TreeSnapshot.Take(work);
                    later.Add(long.Parse(Uploaded().Match(r.Stderr).Groups[1].Value, CultureInfo.InvariantCulture));
                }
            }
        });

        // Every session is listed and exports exactly the tree its run left, read from S3 by a fresh cache.
        var readerEnv = server.Environment(_tmp.Sub("cache-reader"));
        var sessions = Run(readerEnv, _tmp.Path, "sessions", "--trace", url);
        Assert.Equal(total, sessions.Lines.Length);
        for (var n = 1; n <= total; n++)
        {
            var out1 = _tmp.Sub($"out-{n}");
            var export = Run(readerEnv, _tmp.Path, "export", "--trace", url, "--session", n.ToString(CultureInfo.InvariantCulture), "--out", out1);
            Assert.True(export.ExitCode == 0, export.ToString());
            var recorded = RecordedRoot(readerEnv, url, n);
            TreeSnapshot.AssertSame(snapshots[recorded], TreeSnapshot.Take(out1), $"session {n} ({recorded}) exported from S3");
        }

        Assert.Equal(total - 1, later.Count);
        Assert.All(later, bytes => Assert.True(bytes <= firstBytes / 10, $"a later session uploaded {bytes} pack bytes, the first {firstBytes}"));
    }

    [Fact]
    public void ServerKilledMidUploadLeavesTheLocalTraceCompleteAndNothingHalfVisible()
    {
        using var server = S3rverProcess.Start(_tmp.Sub("s3"));
        var url = $"s3://{S3rverProcess.Bucket}/killed";
        var env = server.Environment(_tmp.Sub("cache"));
        env["DIFFKEEPER_UPLOAD_INTERVAL_SECONDS"] = "0.2";
        env["DIFFKEEPER_UPLOAD_RETRY_SECONDS"] = "0";
        var work = _tmp.Sub("work");
        Directory.CreateDirectory(work);

        // The command writes 12 files of 256 KiB over ~2.4 s while its blobs upload; the server dies after ~1 s.
        using var recording = StartProcess(env, work, "record", "--trace", url, "--", "bash", "-c",
            "for i in $(seq 1 12); do head -c 262144 /dev/urandom > f$i.bin; sleep 0.2; done; exit 3");
        Thread.Sleep(1000);
        server.Kill();
        recording.WaitForExit(60_000);
        var stderr = recording.StandardError.ReadToEnd();
        Assert.True(recording.ExitCode == 3, $"exit {recording.ExitCode}: {stderr}"); // the command's own code
        var local = LocalTrace().Match(stderr);
        Assert.True(local.Success, stderr);
        var expected = TreeSnapshot.Take(work);

        // The local trace is complete: it exports the final tree.
        Assert.True(Run(env, work, "verify", "--trace", local.Groups[1].Value, "--read-data").ExitCode == 0);
        var fromLocal = _tmp.Sub("from-local");
        Assert.True(Run(env, work, "export", "--trace", local.Groups[1].Value, "--out", fromLocal).ExitCode == 0);
        TreeSnapshot.AssertSame(expected, TreeSnapshot.Take(fromLocal), "the local trace");

        // Restarted, the server shows no session: what was uploaded before the kill is invisible.
        server.Restart();
        var none = Run(env, work, "sessions", "--trace", url);
        Assert.True(none.ExitCode == 0 && none.Lines.Length == 0, none.ToString());

        // push resumes the upload; the session is then visible and exports exactly from S3.
        var push = Run(env, work, "push", local.Groups[1].Value, url);
        Assert.True(push.ExitCode == 0, push.ToString());
        var one = Run(env, work, "sessions", "--trace", url);
        Assert.Single(one.Lines);
        var fromS3 = _tmp.Sub("from-s3");
        var export = Run(server.Environment(_tmp.Sub("cache-reader")), work, "export", "--trace", url, "--out", fromS3);
        Assert.True(export.ExitCode == 0, export.ToString());
        TreeSnapshot.AssertSame(expected, TreeSnapshot.Take(fromS3), "the session pushed after the kill");
        Assert.Contains("already at", Run(env, work, "push", local.Groups[1].Value, url).Stdout, StringComparison.Ordinal);
    }

    /// <summary>
    /// s3rver is not atomic: killed mid-PUT it can leave an index with an empty ETag (the S3 SDK throws on reading it)
    /// or cut short. The CI run of 8cc7399 met the first one in the test above. Such indexes are skipped with a
    /// warning, the blobs they list are uploaded again, and every session still exports exactly.
    /// </summary>
    [Fact]
    public void DamagedIndexesInTheBucketAreSkippedAndTheirBlobsUploadedAgain()
    {
        var s3Dir = _tmp.Sub("s3");
        using var server = S3rverProcess.Start(s3Dir);
        var url = $"s3://{S3rverProcess.Bucket}/damaged";
        var sources = _tmp.Sub("sources");
        Directory.CreateDirectory(sources);
        foreach (var (name, seed) in new[] { ("a.bin", 1), ("b.bin", 2), ("c.bin", 3) })
        {
            var data = new byte[256 << 10];
            new Random(seed).NextBytes(data);
            File.WriteAllBytes(Path.Combine(sources, name), data);
        }

        Cli.Result Record(string cache, string work, params string[] files)
        {
            Directory.CreateDirectory(work);
            var copy = string.Join("; ", files.Select(f => $"cp {Path.Combine(sources, f)} {f}"));
            var r = Run(server.Environment(_tmp.Sub(cache)), work, "record", "--trace", url, "--", "bash", "-c", copy);
            Assert.True(r.ExitCode == 0, r.ToString());
            return r;
        }

        string[] Indexes() => [.. Directory.EnumerateFiles(s3Dir, "*.idx._S3rver_object", SearchOption.AllDirectories).Order(StringComparer.Ordinal)];

        // Session 1's index is served with an empty ETag, as after a kill between the object and its .md5 file.
        Record("cache-1", _tmp.Sub("work-1"), "a.bin");
        var first = Indexes();
        Assert.NotEmpty(first);
        foreach (var index in first)
        {
            File.WriteAllText(index + ".md5", "");
        }

        // Session 2 uploads past it; its own index is then cut short, as after a kill mid-body.
        var second = Record("cache-2", _tmp.Sub("work-2"), "b.bin");
        Assert.Contains("the server's answer is malformed", second.Stderr, StringComparison.Ordinal);
        var secondIndexes = Indexes().Except(first).ToList();
        Assert.NotEmpty(secondIndexes);
        foreach (var index in secondIndexes)
        {
            File.WriteAllBytes(index, File.ReadAllBytes(index)[..30]);
            File.Delete(index + ".md5");
        }

        // Session 3 holds both files again: both indexes are skipped with a warning, and their blobs uploaded again.
        var third = Record("cache-3", _tmp.Sub("work-3"), "a.bin", "b.bin", "c.bin");
        Assert.Contains("the server's answer is malformed", third.Stderr, StringComparison.Ordinal);
        Assert.Contains("is damaged (length 30", third.Stderr, StringComparison.Ordinal);
        var uploaded = long.Parse(Uploaded().Match(third.Stderr).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(uploaded >= 3 * (256 << 10), $"session 3 uploaded {uploaded} bytes; a, b and c are 768 KiB of random bytes");

        // Every session exports exactly from S3 through a fresh cache.
        var reader = server.Environment(_tmp.Sub("cache-reader"));
        for (var n = 1; n <= 3; n++)
        {
            var out1 = _tmp.Sub($"out-{n}");
            var export = Run(reader, _tmp.Path, "export", "--trace", url, "--session", n.ToString(CultureInfo.InvariantCulture), "--out", out1);
            Assert.True(export.ExitCode == 0, export.ToString());
            TreeSnapshot.AssertSame(TreeSnapshot.Take(RecordedRoot(reader, url, n)), TreeSnapshot.Take(out1), $"session {n}");
        }

        // A newer manifest generation cut short (a keep-mode cut killed mid-PUT) is passed over for the one before it.
        var manifest = Directory.EnumerateFiles(s3Dir, "0000000001.json._S3rver_object", SearchOption.AllDirectories).Order(StringComparer.Ordinal).First();
        File.WriteAllBytes(manifest.Replace("0000000001.json", "0000000002.json", StringComparison.Ordinal), File.ReadAllBytes(manifest)[..40]);
        var sessions = Run(server.Environment(_tmp.Sub("cache-reader-2")), _tmp.Path, "sessions", "--trace", url);
        Assert.True(sessions.ExitCode == 0 && sessions.Lines.Length == 3, sessions.ToString());
        Assert.Contains("0000000002.json is damaged", sessions.Stderr, StringComparison.Ordinal);
        var again = _tmp.Sub("out-again");
        Assert.True(Run(server.Environment(_tmp.Sub("cache-reader-2")), _tmp.Path, "export", "--trace", url, "--session", "1", "--out", again).ExitCode == 0);
        TreeSnapshot.AssertSame(TreeSnapshot.Take(RecordedRoot(reader, url, 1)), TreeSnapshot.Take(again), "session 1 past its damaged generation");
    }

    /// <summary>The directory session <paramref name="n"/> watched, from its timeline's header.</summary>
    private static string RecordedRoot(Dictionary<string, string> env, string url, int n)
    {
        var timeline = Run(env, "/", "timeline", "--trace", url, "--session", n.ToString(CultureInfo.InvariantCulture));
        Assert.True(timeline.ExitCode == 0, timeline.ToString());
        var watched = timeline.Lines.First(l => l.StartsWith("  watched: ", StringComparison.Ordinal));
        return watched["  watched: ".Length..];
    }

    private static string DemoDir()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
            {
                return Path.Combine(dir.FullName, "demo", "flaky-ci-test");
            }
        }

        throw new InvalidOperationException("cannot find the repository root");
    }

    /// <summary>The demo plus 2 MiB of fixed bytes (the same in every copy), so dedup across sessions shows in bytes.</summary>
    private static string Seeded(string demo, string work)
    {
        CopyDemo(demo, work);
        var data = new byte[2 << 20];
        new Random(16).NextBytes(data);
        File.WriteAllBytes(Path.Combine(work, "seed", "fixture.bin"), data);
        return work;
    }

    private static void CopyDemo(string demo, string work)
    {
        Directory.CreateDirectory(Path.Combine(work, "seed"));
        File.Copy(Path.Combine(demo, "flaky_test.sh"), Path.Combine(work, "flaky_test.sh"));
        File.Copy(Path.Combine(demo, "seed", "users.csv"), Path.Combine(work, "seed", "users.csv"));
    }

    private static Process StartProcess(Dictionary<string, string> env, string cwd, params string[] args) => StartProcess(env, cwd, drain: true, args);

    private static Process StartProcess(Dictionary<string, string> env, string cwd, bool drain, params string[] args)
    {
        var psi = new ProcessStartInfo(Cli.Executable) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove("DIFFKEEPER_TRACE");
        foreach (var (k, v) in env)
        {
            psi.Environment[k] = v;
        }

        var p = Process.Start(psi)!;
        if (drain)
        {
            _ = p.StandardOutput.ReadToEndAsync();
        }

        return p;
    }

    /// <summary>diffkeeper with <paramref name="env"/> (the server's credentials and endpoint, a cache) in <paramref name="cwd"/>.</summary>
    internal static Cli.Result Run(Dictionary<string, string> env, string cwd, params string[] args)
    {
        using var p = StartProcess(env, cwd, drain: false, args);
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(true);
            throw new TimeoutException($"diffkeeper {string.Join(' ', args)} did not finish in 3 minutes");
        }

        return new Cli.Result(p.ExitCode, stdout.Result, stderr.Result, System.Text.Encoding.UTF8.GetBytes(stdout.Result));
    }

    [GeneratedRegex(@"new blobs \((\d+) bytes\)")]
    private static partial Regex Uploaded();

    [GeneratedRegex(@"the trace is complete at (\S+);")]
    private static partial Regex LocalTrace();

    public void Dispose() => _tmp.Dispose();
}
