namespace DiffKeeper.Capture;

/// <summary>
/// What a capture backend observed. Most kinds are hints: the recorder reads the file to learn its state.
/// <see cref="Written"/> with a payload and <see cref="Truncated"/> are exact: they carry the change itself.
/// </summary>
public enum CaptureKind
{
    Created,
    Modified,
    ClosedWrite,
    Attributes,
    Deleted,
    /// <summary>Within one root: <see cref="CaptureEvent.Path"/> was renamed to <see cref="CaptureEvent.Path2"/>.</summary>
    Renamed,
    /// <summary>
    /// Within one root: <see cref="CaptureEvent.Path"/> and <see cref="CaptureEvent.Path2"/> were exchanged
    /// (renameat2 with RENAME_EXCHANGE): each name now holds what the other held, subtrees included.
    /// </summary>
    Exchanged,
    /// <summary>
    /// Within one root: <see cref="CaptureEvent.Path2"/> was made a new name (a hard link) of the file at
    /// <see cref="CaptureEvent.Path"/>.
    /// </summary>
    Linked,
    /// <summary>Events were lost (queue overflow): every root must be rescanned. <see cref="CaptureEvent.Detail"/> says why.</summary>
    Overflow,
    /// <summary>
    /// <see cref="CaptureEvent.Length"/> bytes were written at <see cref="CaptureEvent.Offset"/>. When
    /// <see cref="CaptureEvent.Payload"/> is set it holds exactly those bytes; otherwise the file must be read.
    /// </summary>
    Written,
    /// <summary>The file's size was set to <see cref="CaptureEvent.Offset"/> (truncate, ftruncate, open with O_TRUNC).</summary>
    Truncated,
    /// <summary>
    /// fallocate(PUNCH_HOLE | KEEP_SIZE): <see cref="CaptureEvent.Length"/> bytes at <see cref="CaptureEvent.Offset"/>
    /// are a hole now (zeros); the size is unchanged. Exact.
    /// </summary>
    Punched,
    /// <summary>
    /// fallocate that allocates <see cref="CaptureEvent.Length"/> bytes at <see cref="CaptureEvent.Offset"/>: no byte
    /// changes; the file is at least <c>Offset + Length</c> bytes long now, unless <see cref="CaptureEvent.KeepSize"/>
    /// (FALLOC_FL_KEEP_SIZE: the size did not change either). Exact.
    /// </summary>
    Allocated,
    /// <summary>
    /// <see cref="CaptureEvent.Length"/> bytes were written at <see cref="CaptureEvent.Offset"/> by the kernel from
    /// another file (copy_file_range, sendfile): the range of <see cref="CaptureEvent.Source"/>, as that file was at
    /// this event. Exact when the recorder holds that file's bytes as of the event, or reads them from a file
    /// unchanged since; otherwise the file written is read, as after <see cref="Modified"/>.
    /// </summary>
    Copied,
}

/// <summary>
/// One observation. Paths are relative to root <see cref="Root"/> (an index into the roots the source was given);
/// the root itself is "". Paths (and <see cref="Target"/>) hold the name's exact bytes as <see cref="Core.PathBytes"/>
/// strings (bytes that are not UTF-8 as U+DC80..U+DCFF), of any length. <see cref="Timestamp"/> is a <see cref="System.Diagnostics.Stopwatch"/> timestamp.
/// <see cref="Pid"/> is the process (thread group) id, <see cref="Comm"/> its program name, when the backend knows them.
/// <see cref="KnownEmpty"/>: a Created file the backend knows to be empty (it saw the open that created it).
/// <see cref="Mode"/>: the permission bits (07777) the path had right after the change, when the backend carries
/// them (eBPF: a created file or directory, a chmod); null when the recorder must look. <see cref="Target"/>: a
/// Created symlink's target, when the backend carries it (eBPF). <see cref="FileId"/>: the device (major in the high
/// 32 bits, minor in the low ones, as statx gives them) and inode of the file the event was about, when the backend
/// carries them (eBPF: a file created by open). <see cref="KeepSize"/>: an <see cref="CaptureKind.Allocated"/> range
/// that left the file's size as it was (FALLOC_FL_KEEP_SIZE). <see cref="Source"/>: where a
/// <see cref="CaptureKind.Copied"/> range came from.
/// </summary>
public readonly record struct CaptureEvent(
    CaptureKind Kind,
    int Root,
    string Path,
    string? Path2,
    bool IsDirectory,
    long Timestamp,
    int? Pid = null,
    string? Comm = null,
    long Offset = 0,
    long Length = 0,
    ReadOnlyMemory<byte>? Payload = null,
    bool KnownEmpty = false,
    string? Detail = null,
    int? Mode = null,
    string? Target = null,
    (ulong Device, ulong Inode)? FileId = null,
    bool KeepSize = false,
    CopiedFrom? Source = null)
{
    /// <summary>
    /// <see cref="Detail"/> of an <see cref="CaptureKind.Exchanged"/> event that may be two renames instead (inotify,
    /// fanotify: a to b, then b to a, two files, one of the names gone when the events are read). The recorder decides
    /// by inode; as two renames, Path to Path2 came first.
    /// </summary>
    public const string UncertainExchange = "exchange or two renames";

    /// <summary>
    /// <see cref="Detail"/> of a <see cref="CaptureKind.Created"/> event for an entry renamed (or exchanged) into the
    /// watched tree from outside it: a directory arrives with everything below it, which no event of its own names.
    /// </summary>
    public const string MovedIn = "moved in";
}

/// <summary>
/// Where a <see cref="CaptureKind.Copied"/> range came from: the file (device as the kernel gives it, major in the
/// high 32 bits, and inode), the range's first byte in it, the file's absolute path as the kernel walked it at the
/// copy (null: too deep to walk; it may be outside every root) and, when that path is inside a root, its name there.
/// <see cref="Sized"/>: the length is the source's size when the kernel side looked, after the copy (a clone to the
/// source's end), so only a source proven unchanged since the copy vouches for it.
/// </summary>
public sealed record CopiedFrom((ulong Device, ulong Inode) File, long Offset, string? Path, (int Root, string Rel)? Name, bool Sized = false);
