using System.Diagnostics;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// The processes below the agent: the app and whatever it started, kept below the agent by
/// PR_SET_CHILD_SUBREAPER (a daemonizing grandchild is reparented to the agent, not to init).
/// <see cref="Freeze"/> stops them all with SIGSTOP and returns once every thread of every one is stopped: a
/// thread inside write(2) finishes the call first, so when it returns no write is in flight and every change
/// the app made has been queued by the kernel for the capture backend. A thread blocked inside fsync, or in
/// vfork waiting for its (stopped) child, is counted as stopped: it changes no content and stops when the call
/// returns. <see cref="Thaw"/> continues them
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

    /// <summary>The processes stopped by the last <see cref="Freeze"/> (empty once thawed).</summary>
    public IReadOnlyList<int> FrozenPids => _frozen;

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
            var state = ReadState(Path.Combine(task, "stat"));
            if (state is 'T' or 't' or 'Z' or 'X' or null)
            {
                continue;
            }

            // A thread blocked in fsync changes no byte and stops as soon as the call returns: waiting for it would
            // tie every cut to the disk's flush latency (an app with synchronous=FULL or appendfsync always is
            // nearly always inside one). A parent blocked in vfork (dash, posix_spawn) waits for a child that is
            // itself stopped now: it could never stop before the thaw.
            if (state == 'D' && InNonWritingWait(Path.Combine(task, "syscall")))
            {
                continue;
            }

            return false;
        }

        return true;
    }

    private static readonly HashSet<int> NonWritingWaits = RuntimeInformation.ProcessArchitecture == Architecture.Arm64
        ? [82, 83, 84, 220, 435] // fsync, fdatasync, sync_file_range, clone, clone3
        : [74, 75, 277, 56, 58, 435]; // fsync, fdatasync, sync_file_range, clone, vfork, clone3

    private static bool InNonWritingWait(string syscallPath)
    {
        try
        {
            var text = File.ReadAllText(syscallPath);
            var end = text.IndexOf(' ');
            return int.TryParse(end < 0 ? text.Trim() : text[..end], out var nr) && NonWritingWaits.Contains(nr);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
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
