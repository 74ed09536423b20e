namespace DiffKeeper.Recording;

/// <summary>How the command ended, from its raw wait status: an exit with a code, or a death by a signal.</summary>
public readonly record struct ChildExit(int Status)
{
    /// <summary>Set when the command called exit (or returned from main).</summary>
    public int? ExitStatus => (Status & 0x7f) == 0 ? (Status >> 8) & 0xff : null;

    /// <summary>Set when a signal ended the command.</summary>
    public int? Signal => (Status & 0x7f) is not 0 and not 0x7f ? Status & 0x7f : null;

    public bool CoreDumped => Signal is not null && (Status & 0x80) != 0;

    /// <summary>The code a shell reports for this end: the exit status, or 128+N for a death by signal N.</summary>
    public int Code => Signal is { } n ? 128 + n : ExitStatus ?? 0;

    /// <summary>A wait status for a process that exited with <paramref name="code"/>.</summary>
    public static ChildExit Exited(int code) => new((code & 0xff) << 8);

    public override string ToString() => Signal is { } n
        ? $"killed by {SignalName(n)}{(CoreDumped ? " (core dumped)" : "")}"
        : $"exit status {ExitStatus}";

    private static readonly string[] Names =
    [
        "", "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
        "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
        "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR",
        "SIGSYS",
    ];

    // Linux numbering (x86_64 and arm64 share it).
    private static string SignalName(int n) => n < Names.Length ? Names[n] : $"signal {n}";
}
