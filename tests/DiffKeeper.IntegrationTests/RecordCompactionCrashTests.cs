using System.Diagnostics;
using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `record` compacts its trace after the session (issue 12). Killed with SIGKILL at random moments of that compaction,
/// it leaves a trace that verifies with --read-data and exports every moment byte for byte; the next `record`
/// finishes the job. 20 kills by default (~35 s at load 13 on the 2-core machine, ~? s idle); DIFFKEEPER_LONG_CRASH_TESTS=1 makes it 100.
/// </summary>
public sealed class RecordCompactionCrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Record_killed_during_its_compaction_leaves_a_trace_that_verifies_and_exports_every_moment()
    {
        var ct = TestContext.Current.CancellationToken;
        var iterations = Environment.GetEnvironmentVariable("DIFFKEEPER_LONG_CRASH_TESTS") == "1" ? 100 : 20;
        var work = _dir.Sub("work");
        var pristine = _dir.Sub("pristine");
        Directory.CreateDirectory(work);
        // Six versions of two files, each rewritten in a few places: compaction has chunks to re-encode.
        var versions = new List<(byte[] A, byte[] B)>();
        var rng = new Random(12);
        var a = new byte[3 << 19];
        var b = new byte[1 << 19];
        rng.NextBytes(a);
        rng.NextBytes(b);
        for (var v = 0; v < 6; v++)
        {
            for (var region = 0; v > 0 && region < 6; region++)
            {
                var target = region % 2 == 0 ? a : b;
                rng.NextBytes(target.AsSpan(rng.Next(target.Length - (target.Length / 50)), target.Length / 50));
            }

            versions.Add(((byte[])a.Clone(), (byte[])b.Clone()));
            await File.WriteAllBytesAsync(Path.Combine(work, "a.bin"), a, ct);
            await File.WriteAllBytesAsync(Path.Combine(work, "b.bin"), b, ct);
            Cli.Ok(work, "record", "--trace", pristine, "--watch", work, "--capture", "scan", "--no-compact", "-q", "--", "true");
        }

        // How long the session alone takes, and the session with its compaction, to spread the kills over the latter.
        var record = new[] { "record", "--trace", "", "--watch", work, "--capture", "scan", "-q", "--", "true" };
        var (sessionOnly, _) = Timed(pristine, [.. record.Take(8), "--no-compact", .. record.Skip(8)]);
        var (whole, compacted) = Timed(pristine, record);
        Assert.True(compacted < StoreFiles.PackBytes(pristine) * 0.6, $"record left {compacted} pack bytes of {StoreFiles.PackBytes(pristine)}");
        var trace = _dir.Sub("trace");
        var landed = 0;
        for (var i = 0; i < iterations; i++)
        {
            if (Directory.Exists(trace))
            {
                Directory.Delete(trace, recursive: true);
            }

            StoreFiles.CopyDirectory(pristine, trace);
            record[2] = trace;
            using (var p = Cli.Start(_dir.Path, record))
            {
                var at = sessionOnly + ((whole - sessionOnly) * rng.NextDouble());
                await Task.Delay(at * 0.9, ct);
                p.Kill(); // SIGKILL, no cleanup
                await p.WaitForExitAsync(ct);
            }

            var finished = Finished(trace, versions.Count + 1);
            if (finished && StoreFiles.PackBytes(trace) > compacted)
            {
                landed++; // the session was closed and compaction had not finished
            }

            CheckEveryMoment(trace, versions, finished ? [versions.Count + 1] : []);
        }

        // The kills are spread over the compaction by the timings above; on a loaded machine some land before it or
        // after it, but not all of them.
        Assert.True(landed > 0, $"no kill of {iterations} fell inside the compaction");
        TestContext.Current.SendDiagnosticMessage($"{landed} of {iterations} kills fell inside the compaction (session {sessionOnly.TotalMilliseconds:0} ms, with compaction {whole.TotalMilliseconds:0} ms)");

        // A killed compaction is finished by the next recording's.
        var before = StoreFiles.PackBytes(trace);
        Cli.Ok(work, "record", "--trace", trace, "--watch", work, "--capture", "scan", "-q", "--", "true");
        CheckEveryMoment(trace, versions, [versions.Count + 2]);
        var after = StoreFiles.PackBytes(trace);
        Assert.True(after < StoreFiles.PackBytes(pristine) * 0.6, $"{after} pack bytes after the last record ({before} before it, {StoreFiles.PackBytes(pristine)} uncompacted)");
    }

    private (TimeSpan Elapsed, long PackBytes) Timed(string pristine, string[] args)
    {
        var copy = _dir.Sub("timing-" + Guid.NewGuid().ToString("N"));
        StoreFiles.CopyDirectory(pristine, copy);
        args = [.. args];
        args[2] = copy;
        var clock = Stopwatch.StartNew();
        Cli.Ok(_dir.Path, args);
        return (clock.Elapsed, StoreFiles.PackBytes(copy));
    }

    private static bool Finished(string trace, int session)
    {
        foreach (var line in Cli.Ok(Path.GetTempPath(), "sessions", "--trace", trace, "--json").Lines)
        {
            using var doc = JsonDocument.Parse(line);
            if (doc.RootElement.GetProperty("session").GetInt64() == session)
            {
                return doc.RootElement.GetProperty("state").GetString() == "finished";
            }
        }

        return false;
    }

    /// <summary>
    /// Each session recorded one state (scan capture, `true`): its baseline and its end are the same moment's
    /// files, so exporting each session's end covers every moment. <paramref name="later"/>: sessions recorded after
    /// the last version (the killed one, when it finished), which hold the last version's files.
    /// </summary>
    private void CheckEveryMoment(string trace, List<(byte[] A, byte[] B)> versions, int[] later)
    {
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", trace, "--read-data").Stdout);
        var outDir = _dir.Sub("out");
        foreach (var s in Enumerable.Range(1, versions.Count).Concat(later))
        {
            var (a, b) = versions[Math.Min(s, versions.Count) - 1];
            Cli.Ok(_dir.Path, "export", "--trace", trace, "--session", $"{s}", "--out", outDir, "--force");
            Assert.True(a.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "a.bin"))), $"session {s}: a.bin differs");
            Assert.True(b.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "b.bin"))), $"session {s}: b.bin differs");
            Assert.Equal(["a.bin", "b.bin"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        }
    }
}
