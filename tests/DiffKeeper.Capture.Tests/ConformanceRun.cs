using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using DiffKeeper.IntegrationTests;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// Records a batch with one backend through the real binary and checks every export the backend promises
/// against the executor's snapshots.
/// </summary>
public static class ConformanceRun
{
    public static List<Mismatch> Run(Backend backend, Batch batch)
    {
        using var dir = new TempDir();
        var work = dir.Sub("w");
        Directory.CreateDirectory(dir.Sub("out")); // Op.Outside: beside the watched tree, not in it
        var truth = dir.Sub("truth");
        var baseTruth = dir.Sub("base");
        foreach (var d in new[] { truth, baseTruth })
        {
            Directory.CreateDirectory(d);
        }

        for (var h = 0; h < batch.Histories.Length; h++)
        {
            Directory.CreateDirectory(Path.Combine(work, Batch.Dir(h)));
        }

        File.WriteAllText(dir.Sub("base.script"), batch.BaselineScript());
        Executor.Execute(work, dir.Sub("base.script"), baseTruth);
        var perOp = backend.Promises.HasFlag(Promise.EveryOperation);
        var (script, owners) = batch.Script(backend.GapUnderLoad());
        File.WriteAllText(dir.Sub("script"), script);
        var trace = dir.Sub("trace");
        string[] command = perOp ? [Executor.Path, "run", work, dir.Sub("script"), truth, "--per-op"] : [Executor.Path, "run", work, dir.Sub("script"), truth];
        var rec = Cli.Run(dir.Path, ["record", "--capture", backend.Name, "--trace", trace, "--watch", work, "--", .. command]);
        var problems = new List<Mismatch>();
        if (rec.ExitCode != 0 || rec.Stderr.Contains("stopped early", StringComparison.Ordinal))
        {
            problems.Add(new Mismatch(-1, "record", rec.ToString()));
            return problems;
        }

        var session = Cli.JsonLines(Cli.Ok(dir.Path, "sessions", "--trace", trace, "--json")).Single();
        var startWall = session.GetProperty("started_wall_ns").GetInt64();
        var events = Cli.JsonLines(Cli.Ok(dir.Path, "timeline", "--trace", trace, "--json"));
        if (events.Count == 0 || events[^1].GetProperty("op").GetString() != "EXIT" || events[^1].GetProperty("exit_code").GetInt64() != 0)
        {
            problems.Add(new Mismatch(-1, "record", "the timeline does not end with EXIT exit status 0: " + (events.Count == 0 ? "no events" : events[^1].ToString())));
        }

        // (moment as given to --time, truth snapshot, the history to compare or -1 for all)
        var checks = new List<(string Time, string Label, string Truth, int History)>();
        if (backend.Promises.HasFlag(Promise.Baseline))
        {
            checks.Add(("start", "start (baseline)", Path.Combine(baseTruth, "gap-1.txt"), -1));
        }

        var gaps = File.ReadAllLines(Path.Combine(truth, "gaps.txt")).Select(l => l.Split(' ')).ToList();
        if (backend.Promises.HasFlag(Promise.QuietGaps))
        {
            foreach (var g in gaps)
            {
                var middle = (long.Parse(g[1], CultureInfo.InvariantCulture) + long.Parse(g[2], CultureInfo.InvariantCulture)) / 2;
                var rel = middle - startWall;
                var file = Path.Combine(truth, $"gap-{g[0]}.txt");
                var last = events.Where(e => e.GetProperty("time_ns").GetInt64() <= rel && e.GetProperty("op").GetString() != "EXIT")
                    .Select(e => e.GetProperty("seq").GetInt64()).DefaultIfEmpty(0).Max();
                checks.Add(((rel / 1e9).ToString("0.000000", CultureInfo.InvariantCulture) + "s", $"gap {g[0]} by duration", file, -1));
                checks.Add((DateTimeOffset.UnixEpoch.AddTicks(middle / 100).ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", CultureInfo.InvariantCulture), $"gap {g[0]} by RFC 3339 time", file, -1));
                checks.Add(("#" + last.ToString(CultureInfo.InvariantCulture), $"gap {g[0]} by #seq of its last event", file, -1));
            }
        }

        if (backend.Promises.HasFlag(Promise.Final))
        {
            checks.Add(("end", "end", Path.Combine(truth, $"gap-{gaps.Count}.txt"), -1));
        }

        if (perOp)
        {
            // dkexec creates .m/N right after operation N: the event before that marker is the operation's last.
            var marks = events.Where(e => e.GetProperty("op").GetString() == "CREATE" && e.GetProperty("path").GetString() is { } p && p.StartsWith(".m/", StringComparison.Ordinal))
                .ToDictionary(e => int.Parse(e.GetProperty("path").GetString()![3..], CultureInfo.InvariantCulture), e => e.GetProperty("seq").GetInt64());
            for (var n = 1; n <= owners.Count; n++)
            {
                if (!marks.TryGetValue(n, out var seq))
                {
                    problems.Add(new Mismatch(owners[n - 1], $"operation {n}", "no event for the marker .m/" + n));
                    continue;
                }

                checks.Add(("#" + seq.ToString(CultureInfo.InvariantCulture), $"#{seq}, after operation {n} ({Line(script, n)})", Path.Combine(truth, $"op-{n}.txt"), owners[n - 1]));
            }
        }

        var found = new ConcurrentBag<Mismatch>();
        Parallel.For(0, checks.Count, new ParallelOptions { MaxDegreeOfParallelism = 2 }, i =>
        {
            var (time, label, truthFile, history) = checks[i];
            var outDir = dir.Sub("x" + i.ToString(CultureInfo.InvariantCulture));
            // A check of one history exports only its directory: the same reader, 1/50th of the writes.
            string[] only = history < 0 ? [] : ["--include", Batch.Dir(history), "--include", Batch.Dir(history) + "/**"];
            var export = Cli.Run(dir.Path, ["export", "--trace", trace, "--time", time, "--out", outDir, .. only]);
            if (export.ExitCode != 0)
            {
                // A refusal names a path: blame its history, so shrinking can start from it.
                var named = System.Text.RegularExpressions.Regex.Match(export.Stderr, @"'h(\d+)/");
                var blamed = history >= 0 || !named.Success ? history : int.Parse(named.Groups[1].Value, CultureInfo.InvariantCulture);
                found.Add(new Mismatch(blamed, label, "export failed: " + export.Stderr.Trim()));
                return;
            }

            var snapFile = outDir + ".snap";
            var root = history < 0 ? outDir : Path.Combine(outDir, Batch.Dir(history));
            Directory.CreateDirectory(root);
            Executor.Snap(root, snapFile);
            var expected = Snapshot.Read(truthFile);
            var actual = Snapshot.Read(snapFile);
            TempDir.Remove(outDir);
            if (history >= 0)
            {
                foreach (var d in expected.Differences(actual))
                {
                    found.Add(new Mismatch(history, $"{label} [--time {time}]", d));
                }

                return;
            }

            for (var h = 0; h < batch.Histories.Length; h++)
            {
                foreach (var d in expected.Under(Batch.Dir(h)).Differences(actual.Under(Batch.Dir(h))))
                {
                    found.Add(new Mismatch(h, $"{label} [--time {time}]", d));
                }
            }
        });
        problems.AddRange(found.OrderBy(m => m.History).ThenBy(m => m.Moment, StringComparer.Ordinal));
        if (problems.Count > 0 && Environment.GetEnvironmentVariable("DIFFKEEPER_CONFORM_KEEP") is { Length: > 0 } keep)
        {
            // Keeps what a failure needs to be looked at: the trace, the truth snapshots and the script.
            var kept = Path.Combine(keep, backend.Name + "-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(kept);
            foreach (var d in new[] { trace, truth, baseTruth })
            {
                Executor.Run("cp", "-a", d, kept);
            }

            File.Copy(dir.Sub("script"), Path.Combine(kept, "script"));
            File.WriteAllLines(Path.Combine(kept, "problems.txt"), problems.Select(p => p.ToString()));
            problems.Add(new Mismatch(-1, "kept", kept));
        }

        return problems;
    }

    private static string Line(string script, int op)
    {
        var line = script.Split('\n').Where(l => l.Length > 0 && !l.StartsWith("hist ", StringComparison.Ordinal) && !l.StartsWith("gap ", StringComparison.Ordinal)).ElementAt(op - 1);
        return line.Length > 120 ? line[..120] + "..." : line;
    }
}
