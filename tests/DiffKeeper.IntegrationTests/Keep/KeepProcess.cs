using System.Diagnostics;
using System.Text;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// A `diffkeeper run` (or any command) started in its own session and process group (setsid), so a test can
/// SIGKILL the whole group at once, as a node losing a pod would, or only the agent, or only the app.
/// </summary>
public sealed class KeepProcess : IDisposable
{
    private readonly StringBuilder _stderr = new();
    private readonly StringBuilder _stdout = new();

    private KeepProcess(Process process)
    {
        Process = process;
        process.ErrorDataReceived += (_, e) => { lock (_stderr) { _stderr.AppendLine(e.Data); } };
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null)
            {
                return;
            }

            lock (_stdout)
            {
                _stdout.AppendLine(e.Data);
            }

            StdoutLine?.Invoke(e.Data);
        };
        process.BeginErrorReadLine();
        process.BeginOutputReadLine();
    }

    public Process Process { get; }

    /// <summary>The process group id (setsid makes the started program its group leader).</summary>
    public int Pgid => Process.Id;

    public event Action<string>? StdoutLine;

    public string Stderr
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    /// <summary>Starts `diffkeeper ARGS` in a new session.</summary>
    public static KeepProcess StartDiffKeeper(string cwd, params string[] args) => Start(cwd, Cli.Executable, args);

    public static KeepProcess Start(string cwd, string program, params string[] args) => Start(cwd, null, program, args);

    /// <summary>Starts PROGRAM ARGS in a new session, with <paramref name="env"/> added to the environment.</summary>
    public static KeepProcess Start(string cwd, IReadOnlyDictionary<string, string>? env, string program, params string[] args)
    {
        var psi = new ProcessStartInfo("setsid")
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(program);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove("DIFFKEEPER_TRACE");
        foreach (var (k, v) in env ?? new Dictionary<string, string>())
        {
            psi.Environment[k] = v;
        }

        var p = Process.Start(psi)!;
        return new KeepProcess(p);
    }

    /// <summary>SIGKILL to every process of the group (agent, app, its children).</summary>
    public void KillGroup() => Native.Interop.Libc.Kill(-Pgid, 9);

    /// <summary>The processes below the agent, by reading /proc (children of children).</summary>
    public List<int> Descendants()
    {
        var result = new List<int>();
        var queue = new Queue<int>([Process.Id]);
        while (queue.Count > 0)
        {
            var pid = queue.Dequeue();
            foreach (var task in SafeDirectories($"/proc/{pid}/task"))
            {
                string text;
                try
                {
                    text = File.ReadAllText(Path.Combine(task, "children"));
                }
                catch (IOException)
                {
                    continue;
                }

                foreach (var c in text.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse))
                {
                    result.Add(c);
                    queue.Enqueue(c);
                }
            }
        }

        return result;
    }

    private static string[] SafeDirectories(string dir)
    {
        try
        {
            return Directory.GetDirectories(dir);
        }
        catch (IOException)
        {
            return [];
        }
    }

    public int WaitForExit(TimeSpan timeout)
    {
        if (!Process.WaitForExit(timeout))
        {
            KillGroup();
            throw new TimeoutException($"{Process.StartInfo.ArgumentList[0]} did not exit within {timeout}; stderr:\n{Stderr}");
        }

        // Not the parameterless WaitForExit: it also waits for the end of stdout and stderr, which an app that
        // outlived its agent keeps open.
        return Process.ExitCode;
    }

    /// <summary>Waits until every process of the group is gone (a killed group's members die asynchronously).</summary>
    public void WaitGroupGone()
    {
        var sw = Stopwatch.StartNew();
        while (LiveMembers(Pgid) > 0)
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(30))
            {
                throw new TimeoutException($"process group {Pgid} still has members 30 s after SIGKILL");
            }

            Thread.Sleep(5);
        }
    }

    /// <summary>Processes of group <paramref name="pgid"/> that are not zombies.</summary>
    public static int LiveMembers(int pgid)
    {
        var live = 0;
        foreach (var dir in SafeDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out _))
            {
                continue;
            }

            try
            {
                var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                if (fields[0] != "Z" && fields[0] != "X" && int.Parse(fields[2]) == pgid)
                {
                    live++;
                }
            }
            catch (IOException)
            {
            }
        }

        return live;
    }

    public void Dispose()
    {
        if (!Process.HasExited)
        {
            KillGroup();
            Process.WaitForExit(10_000);
        }

        Process.Dispose();
    }
}
