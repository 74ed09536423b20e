using DiffKeeper.Core;

namespace DiffKeeper.Storage.Catalog;

/// <summary>One session as the catalog holds it.</summary>
public sealed record SessionInfo(
    long Id,
    string Command,
    string Cwd,
    string Capture,
    long StartedWallNs,
    long? EndedNs,
    int? ExitCode,
    long LostEvents,
    string State,
    IReadOnlyList<RootInfo> Roots)
{
    public DateTimeOffset StartedWall => DateTimeOffset.UnixEpoch.AddTicks(StartedWallNs / 100);

    /// <summary>
    /// Why the session's file contents were dropped as a whole, when they were (meta key
    /// <c>contents_not_kept.ID</c>, docs/store-format.md): <c>record --keep on-failure</c> after a command that
    /// succeeded. Null for a session whose contents were kept (some versions may still be pruned by <c>prune</c>).
    /// </summary>
    public string? ContentsNotKept { get; init; }

    /// <summary>
    /// When <c>record --max-trace-size</c> dropped some of the session's oldest file contents (meta key
    /// <c>contents_dropped_by_size_limit.ID</c>): which limit did. Its pruned versions were dropped by that ring.
    /// </summary>
    public string? ContentsDroppedBySizeLimit { get; init; }

    /// <summary>
    /// The sessions whose end state this session's baseline starts from, nearest first (format 5,
    /// <c>sessions.baseline_from</c> followed back); empty when the session stored its whole baseline.
    /// </summary>
    public IReadOnlyList<long> BaselineChain { get; init; } = [];

    /// <summary>"killed by SIGNAME" when a signal ended the command (its EXIT event says so; <see cref="ExitCode"/> is then the shell's 128+N).</summary>
    public string? KilledBy { get; init; }
}

/// <summary>
/// A watched directory of a session. <see cref="PathsRoot"/> is the root whose path rows it shares (format 5:
/// the first root of the trace with this path; itself when it owns its paths).
/// </summary>
public sealed record RootInfo(long Id, string Path)
{
    public long PathsRoot { get; init; } = Id;
}

/// <summary>
/// One timeline event. Paths are display paths (see <see cref="TraceReader.DisplayPath"/>). <see cref="Offset"/>
/// and <see cref="Length"/>: where a WRITE/PUNCH/ALLOCATE landed and how many bytes it covered, when the backend
/// knows them exactly (eBPF); null when unknown (inotify, fanotify, catalogs before format 4).
/// </summary>
public sealed record EventRecord(
    long SessionId,
    long Seq,
    long TimeNs,
    ChangeOp Op,
    string? Path,
    string? Path2,
    long? Size,
    int? Pid,
    string? Comm,
    string? Detail,
    long? Offset = null,
    long? Length = null);

/// <summary>
/// One version of one path. <see cref="Rel"/> is relative to root <see cref="RootId"/>. A <see cref="Pruned"/>
/// version's content was dropped by <c>prune</c>: its <see cref="ContentId"/> and <see cref="Extents"/> are null.
/// <see cref="Link"/>: files of one session with the same link at a moment are names of one file (hard links).
/// </summary>
public sealed record VersionRecord(
    long Id,
    long SessionId,
    long RootId,
    long PathId,
    string Rel,
    long Seq,
    long TimeNs,
    EntryKind Kind,
    int Mode,
    int Uid,
    int Gid,
    long MtimeNs,
    long Size,
    byte[]? ContentId,
    string? Target,
    byte[]? Extents,
    bool Pruned = false,
    long? Link = null)
{
    /// <summary>
    /// A version of an earlier session that this session's baseline inherits (format 5, <c>sessions.baseline_from</c>):
    /// read for a session, it is shown as that session's, at event 0; <see cref="Id"/> is the stored row's.
    /// </summary>
    public bool Inherited { get; init; }
}

/// <summary>A version to be written. The catalog assigns its id. <see cref="Link"/>: see <see cref="VersionRecord"/>.</summary>
public sealed record NewVersion(
    long PathId,
    long Seq,
    long TimeNs,
    EntryKind Kind,
    int Mode,
    int Uid,
    int Gid,
    long MtimeNs,
    long Size,
    byte[]? ContentId,
    string? Target,
    byte[]? Extents,
    long? Link = null);

/// <summary>An event to be written; paths are catalog path ids.</summary>
public readonly record struct NewEvent(
    long Seq,
    long TimeNs,
    ChangeOp Op,
    long? PathId,
    long? Path2Id,
    long? Size,
    int? Pid,
    string? Comm,
    string? Detail,
    long? Offset = null,
    long? Length = null);
