using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// SQLite in WAL mode with synchronous=FULL under `diffkeeper run`, checkpointing every few dozen commits: after a
/// SIGKILL (of the whole group, of the agent alone, of the app alone), a wipe of the state directory and a
/// `restore`, the database passes integrity_check and holds every transaction acknowledged more than one flush
/// interval before the kill. A mix of a database file and a WAL read at different moments fails these checks.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed class SqliteSurvivesKillTests : IDisposable
{
    private const int Iterations = 20;
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);
    private readonly TempDir _dir = new();
    private readonly StallMeter _stall = new();

    public void Dispose()
    {
        _stall.Dispose();
        _dir.Dispose();
    }

    public static string Script(string name) => Path.Combine(AppContext.BaseDirectory, "Keep", name);

    private sealed class Acks
    {
        private readonly List<(long N, long At)> _list = [];

        public void Add(string line)
        {
            if (long.TryParse(line, out var n))
            {
                lock (_list)
                {
                    _list.Add((n, Stopwatch.GetTimestamp()));
                }
            }
        }

        public long Count
        {
            get
            {
                lock (_list)
                {
                    return _list.Count;
                }
            }
        }

        /// <summary>The greatest transaction acknowledged more than a flush interval (plus the machine's stall) before <paramref name="killedAt"/>.</summary>
        public long SafeBefore(long killedAt, TimeSpan stall)
        {
            lock (_list)
            {
                return _list.Where(a => Stopwatch.GetElapsedTime(a.At, killedAt) > FlushInterval + stall).Select(a => a.N).DefaultIfEmpty(0).Max();
            }
        }
    }

    private KeepProcess StartWorkload(string state, string store, Acks acks, string? limit = null)
    {
        var run = KeepProcess.StartDiffKeeper(_dir.Path, ["run", "--state-dir", state, "--store", store, "--flush-interval", "100ms",
            "--metrics-addr", "none", "--", "python3", Script("sqlite_workload.py"), Path.Combine(state, "app.db"), .. limit is null ? Array.Empty<string>() : [limit]]);
        run.StdoutLine += acks.Add;
        return run;
    }

    private static void WaitForAcks(Acks acks, long atLeast, KeepProcess run)
    {
        var sw = Stopwatch.StartNew();
        while (acks.Count < atLeast)
        {
            Assert.False(run.Process.HasExited, $"run exited early with {(run.Process.HasExited ? run.Process.ExitCode : 0)}:\n{run.Stderr}");
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"no commits within 60 s:\n{run.Stderr}");
            Thread.Sleep(5);
        }
    }

    /// <summary>Wipes the state directory, restores it from the store, and checks the database.</summary>
    private long WipeRestoreCheck(string state, string store, long mustHave, string context)
    {
        Directory.Delete(state, recursive: true);
        var restored = Cli.Ok(_dir.Path, "restore", "--state-dir", state, "--store", store);
        Assert.Contains("versions verified", restored.Stderr);
        var check = DiffKeeper.Replay.Tests.LoopMount.Run("python3", Script("sqlite_check.py"), Path.Combine(state, "app.db")).Output.Trim();
        Assert.True(check.StartsWith("ok ", StringComparison.Ordinal), $"{context}: the restored database is damaged: {check}");
        var rows = long.Parse(check[3..]);
        Assert.True(rows >= mustHave, $"{context}: transactions {rows + 1}..{mustHave} were acknowledged more than {FlushInterval.TotalMilliseconds} ms before the kill and are lost");
        return rows;
    }

    [Fact]
    public void Twenty_kills_of_the_whole_group_lose_no_early_commit_and_never_corrupt_the_database()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var rng = new Random(7);
        long rows = 0;
        for (var i = 0; i < Iterations; i++)
        {
            var acks = new Acks();
            using var run = StartWorkload(state, store, acks);
            WaitForAcks(acks, 1, run);
            _stall.Reset();
            Thread.Sleep(150 + rng.Next(700));
            var killedAt = Stopwatch.GetTimestamp();
            var stall = _stall.Max;
            run.KillGroup();
            run.WaitForExit(TimeSpan.FromSeconds(30));
            run.WaitGroupGone();
            var mustHave = Math.Max(rows, acks.SafeBefore(killedAt, stall));
            rows = WipeRestoreCheck(state, store, mustHave, $"iteration {i} (the machine stalled up to {stall.TotalMilliseconds:0} ms)");
        }

        Assert.True(rows > Iterations * 10, $"only {rows} transactions committed in {Iterations} lives");
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", store).Stdout);
    }

    [Fact]
    public void Killing_the_agent_alone_leaves_a_store_that_verifies_and_restores_what_was_acknowledged_before()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var acks = new Acks();
        using var run = StartWorkload(state, store, acks);
        WaitForAcks(acks, 1, run);
        _stall.Reset();
        Thread.Sleep(500);
        var app = run.Descendants();
        Assert.NotEmpty(app);
        var killedAt = Stopwatch.GetTimestamp();
        var stall = _stall.Max;
        Native.Interop.Libc.Kill(run.Process.Id, 9);
        run.WaitForExit(TimeSpan.FromSeconds(30));
        Assert.Equal(137, run.Process.ExitCode);
        // The app outlives its agent (outside a container nothing kills it); it may have been stopped mid-cut.
        foreach (var pid in app)
        {
            Native.Interop.Libc.Kill(pid, 9);
        }

        run.WaitGroupGone();
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", store).Stdout);
        WipeRestoreCheck(state, store, acks.SafeBefore(killedAt, stall), $"agent killed (the machine stalled up to {stall.TotalMilliseconds:0} ms)");

        // The next run starts from the restored state and goes on numbering.
        var again = new Acks();
        using var next = StartWorkload(state, store, again, limit: "100000000");
        WaitForAcks(again, 5, next);
        next.KillGroup();
        next.WaitForExit(TimeSpan.FromSeconds(30));
        next.WaitGroupGone();
        Assert.Contains("interrupted", Cli.Ok(_dir.Path, "sessions", "--trace", store).Stdout);
    }

    [Fact]
    public void Killing_the_app_alone_ends_run_with_137_after_committing_everything_it_acknowledged()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var acks = new Acks();
        using var run = StartWorkload(state, store, acks);
        WaitForAcks(acks, 20, run);
        var app = run.Descendants();
        Assert.Single(app);
        Native.Interop.Libc.Kill(app[0], 9);
        Assert.Equal(137, run.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Contains("kept session", run.Stderr);
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", store).Stdout);
        // The agent commits a final cut after the app died: every acknowledged transaction is in the store.
        WipeRestoreCheck(state, store, acks.SafeBefore(long.MaxValue, TimeSpan.Zero), "app killed");
    }
}
