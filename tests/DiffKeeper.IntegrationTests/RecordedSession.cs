using System.Diagnostics;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// A `diffkeeper record` running a command that waits until the test says it is done, so the test itself can
/// act as the workload (in phases, with exact ground truth) while the recorder watches.
/// </summary>
public sealed class RecordedSession : IDisposable
{
    private readonly string _control;

    public RecordedSession(string cwd, string trace, string watch, params string[] extra)
        : this(cwd, trace, watch, "", extra)
    {
    }

    /// <summary>The recorded shell runs <paramref name="commands"/> first, and is still alive when they are read.</summary>
    public static RecordedSession After(string commands, string cwd, string trace, string watch, params string[] extra) =>
        new(cwd, trace, watch, commands + "; ", extra);

    private RecordedSession(string cwd, string trace, string watch, string before, string[] extra)
    {
        _control = Path.Combine(Path.GetTempPath(), "dk-ctl-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(_control);
        var script = $"{before}touch '{_control}/started'; while [ ! -e '{_control}/done' ]; do sleep 0.02; done; exit ${{DK_EXIT:-0}}";
        // The test process makes the changes, and it is not in the recorded process tree: a backend that records
        // only the tree (eBPF) would see nothing, so these sessions use a directory watch unless told otherwise.
        string[] capture = extra.Contains("--capture") ? [] : ["--capture", "inotify"];
        Process = Cli.Start(cwd, ["record", "--trace", trace, "--watch", watch, .. capture, .. extra, "--", "sh", "-c", script]);
        var sw = Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(_control, "started")))
        {
            if (Process.HasExited)
            {
                throw new InvalidOperationException($"record exited early with {Process.ExitCode}: {Process.StandardError.ReadToEnd()}");
            }

            if (sw.Elapsed > TimeSpan.FromMinutes(2))
            {
                throw new TimeoutException("the recorded command did not start");
            }

            Thread.Sleep(10);
        }
    }

    public Process Process { get; }

    /// <summary>Lets the recorded command exit and waits for record to finish; returns its exit code and stderr.</summary>
    public (int ExitCode, string Stderr) Finish()
    {
        File.WriteAllText(Path.Combine(_control, "done"), "");
        Process.StandardInput.Close();
        var stderr = Process.StandardError.ReadToEndAsync();
        Process.StandardOutput.ReadToEnd();
        if (!Process.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            Process.Kill(true);
            throw new TimeoutException("record did not finish within 3 minutes after its command ended");
        }

        return (Process.ExitCode, stderr.Result);
    }

    /// <summary>The pid of the recorded command (the shell), from /proc.</summary>
    public int? ChildPid()
    {
        foreach (var task in Directory.EnumerateDirectories($"/proc/{Process.Id}/task"))
        {
            var children = File.ReadAllText(Path.Combine(task, "children")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (children.Length > 0)
            {
                return int.Parse(children[0], System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        return null;
    }

    public void Dispose()
    {
        File.WriteAllText(Path.Combine(_control, "done"), "");
        if (!Process.HasExited)
        {
            Process.WaitForExit(TimeSpan.FromSeconds(30));
        }

        Process.Dispose();
        Directory.Delete(_control, true);
    }
}
