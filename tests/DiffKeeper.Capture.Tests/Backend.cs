namespace DiffKeeper.Capture.Tests;

/// <summary>Which moments of a recording a backend promises to export exactly.</summary>
[Flags]
public enum Promise
{
    /// <summary>Export at <c>start</c> is the tree as it was before the command ran.</summary>
    Baseline = 1,

    /// <summary>Export at the end is the tree as the command left it.</summary>
    Final = 2,

    /// <summary>Export at any moment of a quiet gap (by duration, RFC 3339 time, or the last event's <c>#seq</c>) is the tree during it.</summary>
    QuietGaps = 4,

    /// <summary>Export at the <c>#seq</c> of an operation's last event is the tree right after that operation.</summary>
    EveryOperation = 8,
}

/// <summary>A capture backend as the suite sees it: its name for <c>--capture</c>, what it promises, and what it needs.</summary>
public sealed record Backend(string Name, Promise Promises, TimeSpan QuietGap, Features KnownFailures = Features.None)
{
    // Known failures (each with a skipped test in ScriptedHistoryTests holding its minimal script) are left out of the
    // generated histories, so the suite keeps finding new ones.
    public static readonly Backend Ebpf = new("ebpf", Promise.Baseline | Promise.Final | Promise.QuietGaps | Promise.EveryOperation, TimeSpan.FromMilliseconds(60));

    // Hint backends read a file after a debounce of up to 100 ms (longer for a path read just before): a quiet gap
    // is one longer than that.
    public static readonly Backend Fanotify = new("fanotify", Promise.Baseline | Promise.Final | Promise.QuietGaps, TimeSpan.FromMilliseconds(300));

    public static readonly Backend Inotify = new("inotify", Promise.Baseline | Promise.Final | Promise.QuietGaps, TimeSpan.FromMilliseconds(300));

    public static readonly Backend Scan = new("scan", Promise.Baseline | Promise.Final, TimeSpan.FromMilliseconds(20));

    /// <summary>
    /// The gap the executor leaves between bursts: <see cref="QuietGap"/> on an idle machine, stretched by the load
    /// average per core (at most 10 times). A hint backend reads files after the events of a burst; on a machine
    /// running 25 processes per 2 cores it reads them after the next burst has begun, which no gap promise can cover
    /// (the bytes of the first burst are gone): the soak's gaps must be quiet for the recorder, not only the command.
    /// </summary>
    public TimeSpan GapUnderLoad()
    {
        var load = double.TryParse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture, out var l) ? l : 0;
        return QuietGap * Math.Clamp(load / Environment.ProcessorCount, 1, 10);
    }

    public static Backend Named(string name) => name switch
    {
        "ebpf" => Ebpf,
        "fanotify" => Fanotify,
        "inotify" => Inotify,
        "scan" => Scan,
        _ => throw new ArgumentException("no backend " + name, nameof(name)),
    };

    /// <summary>Skips the test, saying exactly what is missing, where this kernel or user cannot run the backend.</summary>
    public void SkipIfUnavailable()
    {
        if (Name is "ebpf" or "fanotify" && Environment.UserName != "root")
        {
            Assert.Skip(Name == "ebpf"
                ? "the eBPF backend needs root (CAP_BPF and CAP_PERFMON); this test runs as " + Environment.UserName
                : "the fanotify backend needs CAP_SYS_ADMIN (root); this test runs as " + Environment.UserName);
        }

        if (Name == "ebpf" && !File.Exists("/sys/kernel/btf/vmlinux"))
        {
            Assert.Skip("this kernel has no BTF (/sys/kernel/btf/vmlinux), which the eBPF backend needs");
        }
    }

    public override string ToString() => Name;
}
