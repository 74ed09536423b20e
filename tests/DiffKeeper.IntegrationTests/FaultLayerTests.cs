using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using DiffKeeper.IntegrationTests.Faults;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 13 item 3: faults below the store, in the manner of Tsavorite's SimulatedFlakyDevice. The fault layer
/// (Faults/dkfault.c, LD_PRELOAD into the published binary) sits under the pack writer and the catalog alike and fails
/// one write call (ENOSPC, EIO, a short write of half the bytes) or one fsync/fdatasync (EIO) of the scripted
/// recording (<see cref="FaultWorkload"/>). A fault-free run counts the calls and gives the reference; then, for each
/// point: the faulted session's command runs to its end and `record` exits with its code (or, when the trace could
/// not even be opened, exits 10 with one line before running it); the trace reopens and `verify --read-data` passes;
/// every event the trace holds equals the reference's, and `export` after each equals the reference export after the
/// same event, up to the LOST event that says what was not stored (after it only EXIT); then one more session is
/// recorded without faults and must equal the reference's, and the trace verifies again.
/// In ./test.sh a fixed set of points spread over both sessions and every kind; DIFFKEEPER_FAULT_POINTS=all drives
/// every write and sync call with every kind that applies, =every each call once (kinds in turn).
/// DIFFKEEPER_FAULT_REPORT appends the summary to a file. The figures of the long run are in docs/benchmarks.md.
/// </summary>
public sealed class FaultLayerTests
{
    [Fact]
    public void A_fault_at_a_write_or_sync_of_the_store_loses_no_committed_change_and_the_trace_opens()
    {
        Assert.SkipWhen(FaultLayer.Unavailable is not null, FaultLayer.Unavailable ?? "");
        var watch = Stopwatch.StartNew();
        using var dir = new TempDir();
        var states = new FaultWorkload(dir.Sub("states")).States();
        var reference = new FaultWorkload(dir.Sub("reference"));
        var counts = new (long Writes, long Syncs)[FaultWorkload.Sessions];
        for (var s = 1; s <= FaultWorkload.Sessions; s++)
        {
            var r = reference.Record(s, null, traceAll: true);
            Assert.True(r.ExitCode == FaultWorkload.ExitCodes[s - 1] && r.Stderr.Length == 0, $"fault-free session {s}: {r}");
            counts[s - 1] = FaultLayer.Count(reference.Log(s));
            Assert.True(counts[s - 1].Writes > 0 && counts[s - 1].Syncs > 0, $"the fault layer saw no calls of session {s}: it is not under the store");
        }

        Cli.Ok(reference.Dir, "verify", "--read-data", "--trace", reference.Trace);
        var fine = new List<string>();
        for (var s = 1; s <= FaultWorkload.Sessions; s++)
        {
            Check(reference, s, states[s - 1], faulted: false, mayBeMissing: false, fine);
        }

        Assert.True(fine.Count == 0, "the fault-free run: " + string.Join('\n', fine));

        var points = Plan(counts, Environment.GetEnvironmentVariable("DIFFKEEPER_FAULT_POINTS"));
        var violations = new ConcurrentBag<string>();
        var fired = new ConcurrentDictionary<string, int>();
        var outcomes = new ConcurrentDictionary<string, int>();
        Parallel.ForEach(points, new ParallelOptions { MaxDegreeOfParallelism = 2 }, point =>
        {
            var problems = new List<string>();
            try
            {
                var (kind, outcome) = Run(dir.Sub($"p{point.Session}-{point.Kind}-{point.At}"), point, states, problems);
                fired.AddOrUpdate(kind, 1, (_, n) => n + 1);
                outcomes.AddOrUpdate(outcome, 1, (_, n) => n + 1);
            }
            catch (Exception e)
            {
                problems.Add($"failed: {e.Message}");
            }

            foreach (var p in problems)
            {
                violations.Add($"{point}: {p}");
            }
        });

        var summary = string.Create(CultureInfo.InvariantCulture,
            $"{points.Count} points (calls per session, writes/syncs: {string.Join(", ", counts.Select(c => $"{c.Writes}/{c.Syncs}"))}); " +
            $"faults fired: {string.Join(", ", fired.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}"))}; " +
            $"outcomes: {string.Join(", ", outcomes.OrderBy(k => k.Key).Select(k => $"{k.Key} {k.Value}"))}; " +
            $"{violations.Count} violations; {watch.Elapsed.TotalSeconds:0} s");
        TestContext.Current.SendDiagnosticMessage(summary);
        if (Environment.GetEnvironmentVariable("DIFFKEEPER_FAULT_REPORT") is { Length: > 0 } report)
        {
            File.AppendAllLines(report, [summary, .. violations.Order(StringComparer.Ordinal).Take(200)]);
        }

        Assert.True(violations.IsEmpty, summary + "\n" + string.Join('\n', violations.Order(StringComparer.Ordinal).Take(30)));
    }

    /// <summary>
    /// The points to drive. Default: for each faulted session and kind, three calls spread over its count (the first
    /// ones, where the trace is made or opened, among them). "all": every call with every kind; "every": every call once.
    /// </summary>
    private static List<FaultPoint> Plan((long Writes, long Syncs)[] counts, string? mode)
    {
        var points = new List<FaultPoint>();
        for (var s = 1; s <= 2; s++)
        {
            var (writes, syncs) = counts[s - 1];
            foreach (var kind in FaultPoint.Kinds)
            {
                var n = kind == "fsync" ? syncs : writes;
                IEnumerable<long> calls = mode switch
                {
                    "all" => Range(1, n),
                    "every" when kind == "fsync" => Range(1, n),
                    "every" => Range(1, n).Where(k => FaultPoint.WriteKinds[k % 3] == kind),
                    _ => new[] { 1 + Array.IndexOf(FaultPoint.Kinds, kind), n * (2 + Array.IndexOf(FaultPoint.Kinds, kind)) / 9, n * 9 / 10 }.Select(k => Math.Clamp(k, 1, n)).Distinct(),
                };
                points.AddRange(calls.Select(k => new FaultPoint(s, kind, k)));
            }
        }

        return points;
    }

    private static IEnumerable<long> Range(long from, long to)
    {
        for (var k = from; k <= to; k++)
        {
            yield return k;
        }
    }

    /// <summary>Runs the workload with the fault at <paramref name="point"/> and checks it; returns which fault fired and how the session ended.</summary>
    private static (string Fired, string Outcome) Run(string dir, FaultPoint point, List<List<SortedDictionary<string, Entry>>> states, List<string> problems)
    {
        var w = new FaultWorkload(dir);
        try
        {
            string fired = "none", outcome = "";
            var notOpened = false;
            for (var s = 1; s <= FaultWorkload.Sessions; s++)
            {
                var faulted = s == point.Session;
                var r = w.Record(s, faulted ? point : null, traceAll: false);
                var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
                if (!faulted)
                {
                    if (r.ExitCode != FaultWorkload.ExitCodes[s - 1] || lines.Length != 0)
                    {
                        problems.Add($"session {s} (no fault) ended {r}");
                    }

                    continue;
                }

                fired = File.Exists(w.Log(s)) ? File.ReadAllText(w.Log(s)).Split(" FAULT ").ElementAtOrDefault(1)?.Trim() ?? "none" : "none";
                if (lines.Length > 2 || lines.Any(l => !l.StartsWith("diffkeeper: ", StringComparison.Ordinal)))
                {
                    problems.Add($"stderr is not at most two 'diffkeeper:' lines: {r.Stderr}");
                }

                if (r.ExitCode == FaultWorkload.ExitCodes[s - 1] && w.CommandRan(s))
                {
                    outcome = lines.Length == 0 ? "recorded in full" : "recorded up to the fault";
                }
                else if (r.ExitCode == 10 && !w.CommandRan(s) && lines.Length == 1)
                {
                    // The trace could not be opened (or made): nothing ran, nothing was recorded. The command is run
                    // by hand so the next sessions see the tree the reference saw.
                    outcome = "trace not opened (exit 10)";
                    notOpened = true;
                    w.RunUnrecorded(s);
                }
                else
                {
                    problems.Add($"the command did not run to its end or record did not exit with its code ({FaultWorkload.ExitCodes[s - 1]}): ran {w.CommandRan(s)}, {r}");
                    return (fired, "wrong exit");
                }

                // Reopen: the trace opens and verifies (or, when the fault stopped it being made, there is none yet).
                var verify = Cli.Run(dir, "verify", "--read-data", "--trace", w.Trace);
                if (verify.ExitCode != 0 && !(verify.ExitCode == 3 && s == 1 && notOpened))
                {
                    problems.Add($"the trace does not verify after the fault: {verify}");
                    return (fired, outcome);
                }
            }

            // What the trace says it committed is exactly right.
            for (var s = 1; s <= FaultWorkload.Sessions; s++)
            {
                Check(w, s, states[s - 1], faulted: s == point.Session, mayBeMissing: s == point.Session && notOpened, problems);
            }

            var verifyAgain = Cli.Run(dir, "verify", "--read-data", "--trace", w.Trace);
            if (verifyAgain.ExitCode != 0)
            {
                problems.Add($"the trace does not verify after writing more: {verifyAgain}");
            }

            // The last state equals the tree on disk (with mtimes).
            var end = Path.Combine(dir, "end");
            Cli.Ok(dir, "export", "--trace", w.Trace, "--out", end);
            TreeSnapshot.AssertSame(TreeSnapshot.Take(w.Work), TreeSnapshot.Take(end), $"{point}: the end of the last session against the tree");
            return (fired, outcome);
        }
        finally
        {
            TempDir.Remove(dir);
        }
    }

    /// <summary>
    /// What the trace holds of session <paramref name="session"/> against the states its tree passed through: the
    /// export at its start is the first state, the export after each event one of the states, never an earlier one than
    /// after the event before, and a finished session without LOST ends in the last state. After a LOST event (which
    /// says the changes after the event before it were not stored) only EXIT follows, and both rebuild the tree of the
    /// last event kept. A session without a fault is finished, without LOST.
    /// </summary>
    private static void Check(FaultWorkload w, int session, List<SortedDictionary<string, Entry>> states, bool faulted, bool mayBeMissing, List<string> problems)
    {
        var actual = w.Observe(session, exports: true);
        if (actual is null)
        {
            if (!mayBeMissing)
            {
                problems.Add($"session {session} is missing from the trace");
            }

            return;
        }

        var lost = actual.Events.FindIndex(e => e.Op == "LOST");
        var kept = lost < 0 ? actual.Events.Count : lost;
        var complete = lost < 0 && actual.State == "finished";
        if (!faulted && !complete)
        {
            problems.Add($"session {session} was not faulted but is {actual.State}{(lost >= 0 ? " with a LOST event" : "")}");
        }

        if (lost >= 0 && actual.Events.Skip(lost + 1).Any(e => e.Op != "EXIT"))
        {
            problems.Add($"session {session} has events after LOST other than EXIT: {string.Join("; ", actual.Events.Skip(lost + 1))}");
        }

        if (actual.ExitCode is { } code && code != FaultWorkload.ExitCodes[session - 1])
        {
            problems.Add($"session {session} has exit code {code}, the command exited {FaultWorkload.ExitCodes[session - 1]}");
        }

        var state = 0;
        var lastKept = actual.Trees[0];
        if (kept > 0 && !Same(actual.Trees[0], states[0]))
        {
            problems.Add($"session {session}: export at the start is not the tree the session started with ({Differences(states[0], actual.Trees[0])})");
        }

        for (var i = 0; i < actual.Events.Count; i++)
        {
            var e = actual.Events[i];
            var tree = actual.Trees[e.Seq];
            if (i >= kept)
            {
                if (!Same(tree, lastKept))
                {
                    problems.Add($"session {session}: export after {e} is not the tree of the last event kept before LOST ({Differences(lastKept, tree)})");
                }

                continue;
            }

            var next = states.FindIndex(state, t => Same(t, tree));
            if (next < 0)
            {
                problems.Add($"session {session}: export after {e} is none of the states from step {state} on (against step {state}: {Differences(states[state], tree)})");
                return;
            }

            state = next;
            lastKept = tree;
        }

        if (complete && state != states.Count - 1)
        {
            problems.Add($"session {session} is finished without LOST but ends in the state after step {state} of {states.Count - 1}");
        }
    }

    private static bool Same(SortedDictionary<string, Entry> a, SortedDictionary<string, Entry> b) =>
        a.Count == b.Count && a.All(e => b.TryGetValue(e.Key, out var v) && v == e.Value);

    private static string Differences(SortedDictionary<string, Entry> expected, SortedDictionary<string, Entry> actual) =>
        string.Join(", ", expected.Where(e => !actual.TryGetValue(e.Key, out var a) || a != e.Value).Select(e => e.Key)
            .Concat(actual.Keys.Where(k => !expected.ContainsKey(k)).Select(k => "+" + k)).Take(5));
}
