namespace DiffKeeper.Recording.Agent;

/// <summary>What `run` keeps and how. <see cref="StateDir"/> and <see cref="StoreDir"/> are absolute.</summary>
public sealed record KeepOptions(
    string StateDir,
    string StoreDir,
    IReadOnlyList<string> Command,
    string Cwd)
{
    /// <summary>A change observed is durable in the store within this time (pack fsync, catalog commit with synchronous=FULL).</summary>
    public TimeSpan FlushInterval { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// A cut starts once changes have been quiet this long (a tenth of the flush interval), or at the latest when
    /// the oldest uncommitted change is <see cref="MaxAge"/> old: each cut stops the app for a few milliseconds,
    /// so a burst of writes costs one cut, not one per write.
    /// </summary>
    public TimeSpan Debounce => FlushInterval / 10;

    /// <summary>The oldest uncommitted change waits at most this long (20% of the flush interval) for its cut to start.</summary>
    public TimeSpan MaxAge => FlushInterval * 0.2;

    /// <summary>Longest wait for every thread of the app to stop; past it the cut goes on and is counted as a freeze timeout.</summary>
    public TimeSpan FreezeTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>Files of at least this many bytes are stored as block extent maps (`--big-file`): a cut costs their changed blocks.</summary>
    public long BigFileThreshold { get; init; } = BigFileVersions.DefaultThreshold;

    /// <summary>
    /// The capture backend (`run --capture`). <see cref="CaptureMode.Auto"/> is inotify, what keep mode has always
    /// used; eBPF and fanotify are asked for by name (they add the pid and program of each change to the timeline).
    /// <see cref="CaptureMode.Scan"/> is refused: without events no cut would ever start.
    /// </summary>
    public CaptureMode Capture { get; init; } = CaptureMode.Auto;

    /// <summary>Which versions are pruned while the app runs, and how often; null keeps every version.</summary>
    public RetentionOptions? Retention { get; init; }
}
