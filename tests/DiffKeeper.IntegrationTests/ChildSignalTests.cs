using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// The recorded command starts with the signal state its caller gave diffkeeper (what the .NET runtime changed
/// is put back): the same ignored and blocked signals as the same command run bare under the same caller.
/// Every run goes through `env --default-signal`, so the state does not depend on what the test host passes on.
/// </summary>
public sealed class ChildSignalTests : IDisposable
{
    private readonly TempDir _dir = new();

    public ChildSignalTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    // A background job of a non-interactive shell (SIGINT, SIGQUIT ignored), with SIGPIPE ignored and SIGUSR1 blocked.
    private static readonly string[] Caller = ["--default-signal", "--ignore-signal=PIPE,INT,QUIT", "--block-signal=USR1"];

    private static readonly string[] ShowSignals = ["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"];

    [Fact]
    public void Record_gives_the_command_the_callers_ignored_and_blocked_signals()
    {
        var bare = Env(Caller, ShowSignals);
        var recorded = Env(Caller, ["record", "--trace", _dir.Sub("trace"), "--", .. ShowSignals], diffkeeper: true);

        // The wrapper did what it says: 0x1006 is PIPE, QUIT and INT; 0x200 is USR1.
        Assert.Equal(["SigBlk:\t0000000000000200", "SigIgn:\t0000000000001006"], bare.Lines);
        Assert.Equal(bare.Lines, recorded.Lines);
    }

    [Fact]
    public void Run_gives_the_app_the_callers_ignored_and_blocked_signals()
    {
        var bare = Env(Caller, ShowSignals);
        var run = Env(Caller, ["run", "--state-dir", _dir.Sub("state"), "--store", _dir.Sub("store"), "--metrics-addr", "none", "--", .. ShowSignals], diffkeeper: true);
        Assert.Equal(0, run.ExitCode);
        Assert.Equal(bare.Lines, run.Lines);
    }

    [Fact]
    public void A_pipe_closed_early_ends_the_writer_by_sigpipe_as_it_does_bare()
    {
        // pipefail makes the pipeline's status yes's own: 141 when SIGPIPE killed it, 1 when it saw EPIPE instead.
        string[] command = ["bash", "-c", "set -o pipefail; yes | head -1"];
        var bare = Env(["--default-signal"], command);
        var recorded = Env(["--default-signal"], ["record", "--trace", _dir.Sub("trace"), "--", .. command], diffkeeper: true);
        Assert.Equal(141, bare.ExitCode);
        Assert.Equal(141, recorded.ExitCode);
        Assert.Equal("y\n", recorded.Stdout);
        Assert.DoesNotContain("Broken pipe", recorded.Stderr);
        var exit = Cli.Ok(Work, "timeline", "--trace", _dir.Sub("trace")).Lines[^1];
        Assert.EndsWith("exit status 141", exit); // bash exited with 141; it was not killed
    }

    [Fact]
    public void A_command_that_asks_to_die_with_its_parent_outlives_the_recorders_idle_threads()
    {
        // PR_SET_PDEATHSIG (1) counts the *thread* that forked the command as its parent. Started from a thread-pool
        // thread (where an await had left the recorder), the command got SIGTERM when that thread retired after ~20 idle
        // seconds (review of the twelfth session; eBPF, which `auto` picks as root, starts while the trace opens). 25 s outlives that.
        string[] command = ["python3", "-c", "import ctypes, signal, time; ctypes.CDLL(None).prctl(1, signal.SIGTERM); time.sleep(25); print('alive')"];
        var recorded = Env(["--default-signal"], ["record", "--trace", _dir.Sub("trace"), "--", .. command], diffkeeper: true);
        Assert.True(recorded.ExitCode == 0, $"exit {recorded.ExitCode}, {recorded.Stderr}");
        Assert.Equal("alive\n", recorded.Stdout);
    }

    // In the test's own empty directory: `record` watches its working directory, and /tmp (where it ran before) is every
    // other test's scratch space, so its baseline scan took minutes on a loaded machine (two CI timeouts).
    private Cli.Result Env(string[] envOptions, string[] command, bool diffkeeper = false)
    {
        var psi = new ProcessStartInfo("env")
        {
            WorkingDirectory = Work,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in envOptions)
        {
            psi.ArgumentList.Add(a);
        }

        if (diffkeeper)
        {
            psi.ArgumentList.Add(Cli.Executable);
        }

        foreach (var a in command)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove("DIFFKEEPER_TRACE");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            p.Kill(true);
            throw new TimeoutException($"env {string.Join(' ', psi.ArgumentList)} did not finish in 2 minutes");
        }

        p.WaitForExit();
        return new Cli.Result(p.ExitCode, stdout.Result, stderr.Result, System.Text.Encoding.UTF8.GetBytes(stdout.Result));
    }
}
