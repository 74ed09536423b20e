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

    public static readonly Backend Inotify = new("inotify", Promise.Baseline | Promise.Final | Promise.QuietGaps, TimeSpan.FromMilliseconds(300),
        Features.DirectoryRenames);

    public static readonly Backend Scan = new("scan", Promise.Baseline | Promise.Final, TimeSpan.FromMilliseconds(20));

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
