using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>`run` as a process supervisor: orphans are reaped, signals reach the app, its exit code is returned.</summary>
[Collection(KeepCollection.Name)]
public sealed class AgentProcessTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static char State(int pid)
    {
        var stat = File.ReadAllText($"/proc/{pid}/stat");
        return stat[stat.LastIndexOf(')') + 2];
    }

    [Fact]
    public void Orphans_of_the_app_are_reaped_and_sigterm_reaches_the_app()
    {
        var state = _dir.Sub("data");
        var ready = _dir.Sub("ready");
        // Each background sleep is orphaned when its subshell exits, so it is reparented to the agent.
        var script = $"for i in 1 2 3 4 5; do (sleep 0.1 &); done; touch '{ready}'; trap 'exit 42' TERM; while :; do sleep 0.05; done";
        using var run = KeepProcess.StartDiffKeeper(_dir.Path, "run", "--state-dir", state, "--store", _dir.Sub("deltas"), "--metrics-addr", "none", "--", "sh", "-c", script);
        var sw = Stopwatch.StartNew();
        while (!File.Exists(ready))
        {
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), run.Stderr);
            Thread.Sleep(10);
        }

        // The sleeps end after 0.1 s; the agent reaps those reparented to it within its 100 ms reaping period.
        List<int> zombies;
        do
        {
            Thread.Sleep(100);
            zombies = run.Descendants().Where(pid => { try { return State(pid) == 'Z'; } catch (IOException) { return false; } }).ToList();
        }
        while (zombies.Count > 0 && sw.Elapsed < TimeSpan.FromSeconds(30));
        Assert.Empty(zombies);

        Native.Interop.Libc.Kill(run.Process.Id, 15);
        Assert.Equal(42, run.WaitForExit(TimeSpan.FromSeconds(60)));
        Assert.Contains("kept session", run.Stderr);
    }
}
