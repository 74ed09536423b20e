namespace DiffKeeper.Capture;

/// <summary>What a capture backend observed. Hints, not content: the recorder reads the file to learn its state.</summary>
public enum CaptureKind
{
    Created,
    Modified,
    ClosedWrite,
    Attributes,
    Deleted,
    /// <summary>Within one root: <see cref="CaptureEvent.Path"/> was renamed to <see cref="CaptureEvent.Path2"/>.</summary>
    Renamed,
    /// <summary>Events were lost (queue overflow): every root must be rescanned.</summary>
    Overflow,
}

/// <summary>
/// One observation. Paths are relative to root <see cref="Root"/> (an index into the roots the source was given);
/// the root itself is "". <see cref="Timestamp"/> is a <see cref="System.Diagnostics.Stopwatch"/> timestamp.
/// </summary>
public readonly record struct CaptureEvent(
    CaptureKind Kind,
    int Root,
    string Path,
    string? Path2,
    bool IsDirectory,
    long Timestamp,
    int? Pid = null,
    string? Comm = null);
