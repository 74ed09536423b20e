using DiffKeeper.Core;

namespace DiffKeeper.Recording;

/// <summary>What to record and where. Roots are absolute, normalized, and exist.</summary>
public sealed record RecordOptions(
    string TraceDir,
    IReadOnlyList<string> Roots,
    IReadOnlyList<Glob> Excludes,
    IReadOnlyList<string> Command,
    string Cwd)
{
    /// <summary>How long a changed file waits before it is read, so a burst of writes costs one read.</summary>
    public TimeSpan Debounce { get; init; } = TimeSpan.FromMilliseconds(2);

    /// <summary>A file read again within this window waits until it ends (hot paths, bounded CPU).</summary>
    public TimeSpan HotWindow { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Longest time between catalog commits while events keep coming (the recorder also commits whenever it goes
    /// idle). Each commit fsyncs the pack, which costs milliseconds on real disks: a burst is committed in a few
    /// large transactions rather than many small ones.
    /// </summary>
    public TimeSpan CommitInterval { get; init; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The capture backend (`--capture`).</summary>
    public CaptureMode Capture { get; init; } = CaptureMode.Auto;

    /// <summary>Bytes of each write carried with its event by the eBPF backend; larger writes are read back.</summary>
    public int MaxPayload { get; init; } = 256 * 1024;

    /// <summary>Files of at least this many bytes are stored as block extent maps (`--big-file`).</summary>
    public long BigFileThreshold { get; init; } = BigFileVersions.DefaultThreshold;

    /// <summary>Size of the eBPF ring buffer (`--ring-buffer`), a power of two.</summary>
    public int RingBufferBytes { get; init; } = 64 << 20;

    /// <summary>`--verbose`: say on stderr what the start chose where it had a fallback (the eBPF loader), and why.</summary>
    public bool Verbose { get; init; }

    /// <summary>Compact the trace after the session finished, as `gc` does (`--no-compact` turns it off).</summary>
    public bool Compact { get; init; } = true;

    /// <summary>
    /// `--max-trace-size`: the bytes the trace's files may take (at least <see cref="Storage.TraceSizeLimit.Minimum"/>);
    /// the oldest contents are dropped first, and the recording stops storing when that is not enough. Null: no limit.
    /// </summary>
    public long? MaxTraceSize { get; init; }
}
