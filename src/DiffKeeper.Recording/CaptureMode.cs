namespace DiffKeeper.Recording;

/// <summary>Which capture backend `record` uses (`--capture`).</summary>
public enum CaptureMode
{
    /// <summary>The best one that works here: eBPF, then fanotify, then inotify.</summary>
    Auto,
    Ebpf,
    Fanotify,
    Inotify,
    /// <summary>No events: the baseline and the final reconcile scan only.</summary>
    Scan,
}
