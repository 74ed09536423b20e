using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// Redis (AOF with appendfsync always, plus RDB) under `diffkeeper run`: a client writes numbered keys and notes
/// when each was acknowledged; the whole process group is SIGKILLed at a random moment, the state directory is
/// deleted (the pod's emptyDir is gone), and the next `run` must bring back every key acknowledged more than one
/// flush interval before the kill.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed class RedisSurvivesKillTests : IDisposable
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

    public static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    public static string[] RedisArgs(string stateDir, int port) =>
    [
        "redis-server", "--port", port.ToString(), "--bind", "127.0.0.1", "--dir", stateDir,
        "--appendonly", "yes", "--appendfsync", "always", "--save", "1 1", "--dbfilename", "dump.rdb",
        "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
    ];

    [Fact]
    public void Every_key_acknowledged_a_flush_interval_before_a_kill_of_the_whole_group_survives_20_kills_and_wipes()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var mustSurvive = new HashSet<string>();
        var lateAcks = 0;
        var maxStall = TimeSpan.Zero;
        var rng = new Random(5);
        for (var iteration = 0; iteration <= Iterations; iteration++)
        {
            var port = FreePort();
            using var run = KeepProcess.StartDiffKeeper(_dir.Path, ["run", "--state-dir", state, "--store", store,
                "--flush-interval", "100ms", "--metrics-addr", "none", "--", .. RedisArgs(state, port)]);
            using var client = RespClient.Connect(port, TimeSpan.FromSeconds(60), () => run.Stderr);

            // Everything acknowledged early enough in earlier lives is back.
            var present = ((object?[])client.Command("KEYS", "k:*")!).Cast<string>().ToHashSet();
            var missing = mustSurvive.Where(k => !present.Contains(k)).Order().ToList();
            Assert.True(missing.Count == 0,
                $"iteration {iteration}: {missing.Count} acknowledged keys lost (machine stalls up to {maxStall.TotalMilliseconds:0} ms allowed), e.g. {string.Join(", ", missing.Take(5))}; agent said:\n{run.Stderr}");
            if (iteration == Iterations)
            {
                Libc(run.Process.Id, 15); // SIGTERM is forwarded; Redis exits cleanly and so does the agent
                Assert.Equal(0, run.WaitForExit(TimeSpan.FromSeconds(60)));
                break;
            }

            _stall.Reset();
            var acks = WriteKeys(client, iteration, TimeSpan.FromMilliseconds(300 + rng.Next(700)));

            var killedAt = Stopwatch.GetTimestamp();
            var stall = _stall.Max;
            maxStall = stall > maxStall ? stall : maxStall;
            run.KillGroup();
            run.WaitForExit(TimeSpan.FromSeconds(30));
            run.WaitGroupGone();
            foreach (var (key, at) in acks)
            {
                if (Stopwatch.GetElapsedTime(at, killedAt) > FlushInterval + stall)
                {
                    mustSurvive.Add(key);
                }
                else
                {
                    lateAcks++;
                }
            }

            Directory.Delete(state, recursive: true); // the emptyDir is gone with the pod
        }

        Assert.True(mustSurvive.Count > Iterations * 100, $"only {mustSurvive.Count} keys were written");
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", store).Stdout);
    }

    /// <summary>SETs numbered keys of one life for <paramref name="duration"/>; each key with when it was acknowledged.</summary>
    public static List<(string Key, long At)> WriteKeys(RespClient client, int iteration, TimeSpan duration)
    {
        var acks = new List<(string Key, long At)>();
        var sw = Stopwatch.StartNew();
        for (var n = 0; sw.Elapsed < duration; n++)
        {
            var key = $"k:{iteration}:{n}";
            Assert.Equal("OK", client.Command("SET", key, new string('v', n % 200)));
            acks.Add((key, Stopwatch.GetTimestamp()));
        }

        return acks;
    }

    private static void Libc(int pid, int signal) => Native.Interop.Libc.Kill(pid, signal);
}
