using System.Diagnostics;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// The processes below the agent: the app and whatever it started, kept below the agent by
/// PR_SET_CHILD_SUBREAPER (a daemonizing grandchild is reparented to the agent, not to init).
/// <see cref="Freeze"/> stops them all with SIGSTOP and returns once every thread of every one is stopped: a
/// thread inside write(2) finishes the call first, so when it returns no write is in flight and every change
/// the app made has been queued by the kernel for the capture backend. <see cref="Thaw"/> continues them
/// (children before parents, so a parent waiting with WUNTRACED never sees a stopped child). Processes that
/// were already stopped before the freeze are left stopped.
/// </summary>
internal sealed class AppProcessTree
{
    private readonly int _self = Libc.Getpid();
    private readonly List<int> _frozen = [];

    /// <summary>Makes orphans of the app's tree children of this process. Returns false when the kernel refuses.</summary>
    public static bool BecomeSubreaper() => Libc.Prctl(Libc.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0;

    public int FrozenCount => _frozen.Count;

    /// <summary>Stops every descendant; gives up waiting after <paramref name="timeout"/> (returns false: a thread did not stop).</summary>
    public bool Freeze(TimeSpan timeout)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        var seen = new HashSet<int>();
        while (true)
        {
            // A process not stopped yet may fork: look again until a round finds nothing new.
            var fresh = Descendants().Where(seen.Add).ToList();
            if (fresh.Count == 0)
            {
                return true;
            }

            foreach (var pid in fresh)
            {
                if (State(pid) is 'T' or 't' or 'Z' or 'X' or null)
                {
                    continue; // stopped by someone else, or exiting: not ours to continue
                }

                if (Libc.Kill(pid, Libc.SIGSTOP) == 0)
                {
                    _frozen.Add(pid);
                }
            }

            foreach (var pid in fresh)
            {
                while (!AllThreadsStopped(pid))
                {
                    if (Stopwatch.GetTimestamp() > deadline)
                    {
                        return false;
                    }

                    Thread.SpinWait(200);
                    Thread.Yield();
                }
            }
        }
    }

    public void Thaw()
    {
        for (var i = _frozen.Count - 1; i >= 0; i--)
        {
            Libc.Kill(_frozen[i], Libc.SIGCONT);
        }

        _frozen.Clear();
    }

    /// <summary>Reaps exited descendants reparented to this process (not <paramref name="appPid"/>: the app's own exit is its parent's to collect).</summary>
    public int ReapOrphans(int appPid)
    {
        var reaped = 0;
        foreach (var pid in Children(_self))
        {
            if (pid != appPid && State(pid) == 'Z' && Libc.Waitpid(pid, out _, Libc.WNOHANG) == pid)
            {
                reaped++;
            }
        }

        return reaped;
    }

    /// <summary>Every descendant, parents before children.</summary>
    public List<int> Descendants()
    {
        var result = new List<int>();
        var queue = new Queue<int>(Children(_self));
        while (queue.Count > 0)
        {
            var pid = queue.Dequeue();
            result.Add(pid);
            foreach (var child in Children(pid))
            {
                queue.Enqueue(child);
            }
        }

        return result;
    }

    private static IEnumerable<int> Children(int pid)
    {
        string[] tasks;
        try
        {
            tasks = Directory.GetDirectories($"/proc/{pid}/task");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            yield break;
        }

        foreach (var task in tasks)
        {
            string text;
            try
            {
                text = File.ReadAllText(Path.Combine(task, "children"));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                continue;
            }

            foreach (var part in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (int.TryParse(part, out var child))
                {
                    yield return child;
                }
            }
        }
    }

    private static bool AllThreadsStopped(int pid)
    {
        string[] tasks;
        try
        {
            tasks = Directory.GetDirectories($"/proc/{pid}/task");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return true; // gone
        }

        foreach (var task in tasks)
        {
            if (ReadState(Path.Combine(task, "stat")) is not ('T' or 't' or 'Z' or 'X' or null))
            {
                return false;
            }
        }

        return true;
    }

    private static char? State(int pid) => ReadState($"/proc/{pid}/stat");

    // The state is the field after the command name, which is in parentheses and may itself hold ')'.
    private static char? ReadState(string statPath)
    {
        try
        {
            var text = File.ReadAllText(statPath);
            var close = text.LastIndexOf(')');
            return close >= 0 && close + 2 < text.Length ? text[close + 2] : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
