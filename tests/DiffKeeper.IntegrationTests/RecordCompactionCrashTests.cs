using System.Diagnostics;
using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `record` compacts its trace while the command runs and after the session (issue 12). Killed with SIGKILL at random
/// moments of either compaction, it leaves a trace that verifies with --read-data and exports every moment byte for byte; the next `record`
/// finishes the job. 20 kills by default (docs/benchmarks.md, "Issue 12", has the runtime); DIFFKEEPER_RECORD_KILLS=N for more.
/// </summary>
public sealed class RecordCompactionCrashTests : IDisposable
{
    // The small files of each version of the kill test (empty in the others).
    private readonly List<Dictionary<string, byte[]>> _small = [];

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Record_killed_during_its_compaction_leaves_a_trace_that_verifies_and_exports_every_moment()
    {
        var ct = TestContext.Current.CancellationToken;
        var iterations = int.TryParse(Environment.GetEnvironmentVariable("DIFFKEEPER_RECORD_KILLS"), out var n) && n >= 2 ? n : 20;
        var work = _dir.Sub("work");
        var pristine = _dir.Sub("pristine");
        Directory.CreateDirectory(work);
        // Five versions of two files, each rewritten in a few places: compaction has chunks to re-encode.
        var versions = new List<(byte[] A, byte[] B)>();
        var rng = new Random(12);
        var a = new byte[1 << 20];
        var b = new byte[1 << 18];
        rng.NextBytes(a);
        rng.NextBytes(b);
        for (var v = 0; v < 5; v++)
        {
            for (var region = 0; v > 0 && region < 6; region++)
            {
                var target = region % 2 == 0 ? a : b;
                rng.NextBytes(target.AsSpan(rng.Next(target.Length - (target.Length / 50)), target.Length / 50));
            }

            versions.Add(((byte[])a.Clone(), (byte[])b.Clone()));
            await File.WriteAllBytesAsync(Path.Combine(work, "a.bin"), a, ct);
            await File.WriteAllBytesAsync(Path.Combine(work, "b.bin"), b, ct);
            // And small source files, a few edited per version: later baselines store those as deltas against the
            // versions they inherit (deltas written while recording), which the killed passes then work around.
            Directory.CreateDirectory(Path.Combine(work, "src"));
            var small = new Dictionary<string, byte[]>();
            for (var f = 0; f < 12; f++)
            {
                var lines = Enumerable.Range(0, 200 + (f * 37)).Select(l => $"    value_{f}_{l} = handle(offset, {(l * 7919) % 1000});").ToList();
                for (var edit = 1; edit <= v; edit++)
                {
                    if ((f + edit) % 3 == 0)
                    {
                        lines[(f * 13 + edit * 29) % lines.Count] = $"    edited_{edit} = state({f});";
                    }
                }

                small[$"f{f:D2}.cs"] = System.Text.Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n");
                var path = Path.Combine(work, "src", $"f{f:D2}.cs");
                if (!File.Exists(path) || !File.ReadAllBytes(path).AsSpan().SequenceEqual(small[$"f{f:D2}.cs"]))
                {
                    await File.WriteAllBytesAsync(path, small[$"f{f:D2}.cs"], ct);
                }
            }

            _small.Add(small);
            Cli.Ok(work, "record", "--trace", pristine, "--watch", work, "--capture", "scan", "--no-compact", "-q", "--", "true");
        }

        // How long the session alone takes, and the session with its compaction, to spread the kills over the latter.
        var record = new[] { "record", "--trace", "", "--watch", work, "--capture", "scan", "-q", "--", "true" };
        var (sessionOnly, _) = Timed(pristine, [.. record.Take(8), "--no-compact", .. record.Skip(8)]);
        var (whole, compacted) = Timed(pristine, record);
        Assert.True(compacted < StoreFiles.PackBytes(pristine) * 0.6, $"record left {compacted} pack bytes of {StoreFiles.PackBytes(pristine)}");
        var trace = _dir.Sub("trace");
        var landed = 0;
        // The window of the pass after the session, narrowed by what each kill found: a kill before the session
        // finished moves its start later, one after the pass finished moves its end earlier (timings vary with load).
        var (from, to) = (sessionOnly * 0.9, sessionOnly * 0.9 + (whole - sessionOnly));
        for (var i = 0; i < iterations; i++)
        {
            if (Directory.Exists(trace))
            {
                Directory.Delete(trace, recursive: true);
            }

            StoreFiles.CopyDirectory(pristine, trace);
            record[2] = trace;
            // Even kills fall in the pass after the session (`true`); odd ones in the pass during the command (`sleep`),
            // which starts half a second after it and hands its steps to the recorder's thread.
            var during = i % 2 == 1;
            string[] args = during ? [.. record[..^1], "sleep", "5"] : record;
            TimeSpan at;
            using (var p = Cli.Start(_dir.Path, args))
            {
                at = during
                    ? TimeSpan.FromMilliseconds(500) + (sessionOnly * 0.5) + ((whole - sessionOnly) * 2 * rng.NextDouble())
                    : from + ((to - from) * rng.NextDouble());
                await Task.Delay(at, ct);
                p.Kill(); // SIGKILL, no cleanup
                await p.WaitForExitAsync(ct);
            }

            var finished = Finished(trace, versions.Count + 1);
            if (!during && finished && StoreFiles.PackBytes(trace) > compacted)
            {
                landed++; // the session was closed and compaction had not finished
            }
            else if (!during && to - from > TimeSpan.FromMilliseconds(40))
            {
                (from, to) = finished ? (from, Max(from + TimeSpan.FromMilliseconds(20), at)) : (Min(at, to - TimeSpan.FromMilliseconds(20)), to);
            }

            CheckEveryMoment(trace, versions, finished ? [versions.Count + 1] : []);
        }

        // The kills are spread over the compaction by the timings above; on a loaded machine some land before it or
        // after it, but not all of them.
        Assert.True(landed > 0, $"no kill of {iterations / 2} fell inside the compaction after the session");
        TestContext.Current.SendDiagnosticMessage($"{landed} of {iterations / 2} kills after the session fell inside its compaction (session {sessionOnly.TotalMilliseconds:0} ms, with compaction {whole.TotalMilliseconds:0} ms)");

        // A killed compaction is finished by the next recording's.
        var before = StoreFiles.PackBytes(trace);
        Cli.Ok(work, "record", "--trace", trace, "--watch", work, "--capture", "scan", "-q", "--", "true");
        CheckEveryMoment(trace, versions, [versions.Count + 2]);
        var after = StoreFiles.PackBytes(trace);
        Assert.True(after < StoreFiles.PackBytes(pristine) * 0.6, $"{after} pack bytes after the last record ({before} before it, {StoreFiles.PackBytes(pristine)} uncompacted)");
    }

    [Fact]
    public async Task Record_compacts_in_the_background_while_the_command_runs()
    {
        var ct = TestContext.Current.CancellationToken;
        var work = _dir.Sub("work");
        var trace = _dir.Sub("trace");
        Directory.CreateDirectory(work);
        var rng = new Random(5);
        var a = new byte[1 << 20];
        rng.NextBytes(a);
        var versions = new List<byte[]>();
        for (var v = 0; v < 4; v++)
        {
            rng.NextBytes(a.AsSpan(rng.Next(a.Length - 40_000), 40_000));
            versions.Add((byte[])a.Clone());
            await File.WriteAllBytesAsync(Path.Combine(work, "a.bin"), a, ct);
            Cli.Ok(work, "record", "--trace", trace, "--watch", work, "--capture", "scan", "--no-compact", "-q", "--", "true");
        }

        // The command waits (10 s at most) until the trace holds a delta, writing a file of its own meanwhile: it
        // exits 0 only if compaction ran while it was running, beside the recording's own commits.
        var script = $$"""
            i=0
            while [ $i -lt 100 ]; do
              echo "line $i" >> {{work}}/log.txt
              {{Cli.Executable}} stats --trace {{trace}} --json | grep -q '"deltas":[1-9]' && exit 0
              sleep 0.1; i=$((i+1))
            done
            exit 1
            """;
        var r = Cli.Run(work, "record", "--trace", trace, "--watch", work, "--capture", "inotify", "--", "sh", "-c", script);
        Assert.True(r.ExitCode == 0, $"no delta appeared while the command ran: {r}");
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", trace, "--read-data").Stdout);
        var outDir = _dir.Sub("out");
        for (var s = 1; s <= versions.Count; s++)
        {
            Cli.Ok(_dir.Path, "export", "--trace", trace, "--session", $"{s}", "--out", outDir, "--force");
            Assert.True(versions[s - 1].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "a.bin"))), $"session {s}: a.bin differs");
        }

        Cli.Ok(_dir.Path, "export", "--trace", trace, "--session", "5", "--out", outDir, "--force");
        Assert.True(versions[^1].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "a.bin"))));
        Assert.Equal(File.ReadAllBytes(Path.Combine(work, "log.txt")), File.ReadAllBytes(Path.Combine(outDir, "log.txt")));
    }

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

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
    /// The pass after the session runs only when it could find something: when some version since the last finished
    /// pass holds other content than its path's version before it (or no pass ever finished and something was pruned).
    /// The JSON summary's pack_bytes_after_compaction is null when it was skipped.
    /// </summary>
    [Fact]
    public void Record_skips_its_compaction_when_nothing_was_superseded_since_the_last_pass()
    {
        var work = _dir.Sub("skip-work");
        var trace = _dir.Sub("skip-trace");
        Directory.CreateDirectory(work);
        var data = new byte[1 << 18];
        new Random(5).NextBytes(data);
        File.WriteAllBytes(Path.Combine(work, "a.bin"), data);

        bool Compacted(params string[] extra)
        {
            var r = Cli.Ok(work, ["record", "--trace", trace, "--watch", work, "--capture", "scan", "--json", .. extra, "--", "true"]);
            using var doc = JsonDocument.Parse(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries).Single());
            return doc.RootElement.GetProperty("pack_bytes_after_compaction").ValueKind != JsonValueKind.Null;
        }

        void Change(int at)
        {
            data[at] ^= 0xff;
            File.WriteAllBytes(Path.Combine(work, "a.bin"), data);
        }

        Assert.False(Compacted(), "a new trace: every path has one version");
        Assert.False(Compacted(), "nothing changed");
        Change(1000);
        Assert.True(Compacted(), "a.bin's first content was superseded");
        Assert.False(Compacted(), "nothing changed since that pass");
        Change(2000);
        Assert.False(Compacted("--no-compact"), "--no-compact");
        Assert.True(Compacted(), "the --no-compact session superseded a.bin's second content");
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", trace, "--read-data").Stdout);
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
            if (_small.Count == 0)
            {
                Assert.Equal(["a.bin", "b.bin"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
                continue;
            }

            Assert.Equal(["a.bin", "b.bin", "src"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            var small = _small[Math.Min(s, _small.Count) - 1];
            Assert.Equal(small.Keys.Order(StringComparer.Ordinal), Directory.GetFiles(Path.Combine(outDir, "src")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
            Assert.All(small, f => Assert.True(f.Value.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "src", f.Key))), $"session {s}: src/{f.Key} differs"));
        }
    }
}
