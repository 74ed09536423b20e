namespace DiffKeeper.Core;

/// <summary>
/// Exit codes of the diffkeeper executable. The numbers are part of the public interface (README, "Exit codes"):
/// never renumber, only add. `record` additionally passes through the recorded command's own exit code.
/// </summary>
public enum ExitCode
{
    Ok = 0,
    /// <summary>An unexpected failure; the full detail is printed.</summary>
    Failure = 1,
    /// <summary>Bad command line or bad argument value.</summary>
    Usage = 2,
    /// <summary>No trace at the given location.</summary>
    NoTrace = 3,
    /// <summary>The trace is being written by another process.</summary>
    Locked = 4,
    /// <summary>The trace is damaged: a pack record, blob or version failed its check.</summary>
    Corrupt = 5,
    /// <summary>The output directory is not empty and --force was not given.</summary>
    OutputExists = 6,
    /// <summary>The trace holds a path that would escape the output directory.</summary>
    UnsafePath = 7,
    /// <summary>The path, session or moment asked for is not in the trace.</summary>
    NotFound = 8,
    /// <summary>The trace was written by a newer DiffKeeper.</summary>
    UnsupportedFormat = 9,
    /// <summary>An operating system call failed (permission denied, disk full).</summary>
    SystemError = 10,
    /// <summary>`diff` only: the two states differ (diff(1) says 1, which here is an unexpected failure).</summary>
    Differences = 11,
    /// <summary>
    /// The moment asked for lies in a session whose file contents were not kept: it was recorded with
    /// `record --keep on-failure` and its command exited 0; or a file's content at that moment was dropped by
    /// `record --max-trace-size` (oldest contents first). The summary and timeline remain.
    /// </summary>
    ContentNotKept = 12,
    /// <summary>The recorded command could not be executed (permission, not executable).</summary>
    CannotExecute = 126,
    /// <summary>The recorded command was not found.</summary>
    CommandNotFound = 127,
}
