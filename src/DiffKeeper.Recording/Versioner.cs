using System.Runtime.InteropServices;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Recording;

/// <summary>
/// Keeps the recorder's view of every path of a session (its latest stored version) and stores a new version
/// when a path's observed state differs from it. Reads files with O_NOFOLLOW; never follows a symlink.
/// Called from one thread only.
/// </summary>
internal sealed class Versioner
{
    private readonly TraceWriter _writer;
    private readonly long _sessionId;
    private readonly IReadOnlyList<string> _roots;
    private readonly IReadOnlyList<long> _rootIds;
    private readonly Dictionary<(int Root, string Rel), PathState> _paths = [];
    private readonly HashSet<(int Root, string Rel)> _warned = [];
    private readonly TextWriter _log;
    // Files whose bytes the recorder follows change by change (exact capture): versions come from here, not reads.
    private readonly Dictionary<(int Root, string Rel), FileShadow> _shadows = [];
    private long _shadowBytes;

    public Versioner(TraceWriter writer, long sessionId, IReadOnlyList<string> roots, IReadOnlyList<long> rootIds, TextWriter log)
    {
        _log = log;
        _writer = writer;
        _sessionId = sessionId;
        _roots = roots;
        _rootIds = rootIds;
    }

    public long VersionsWritten { get; private set; }

    /// <summary>Whether file reads may hash and compress on every core (not while the recorded command runs).</summary>
    public bool UseAllCores { get; set; }

    public long RawBytes { get; private set; }

    /// <summary>Largest file followed change by change; bigger ones are read after each change instead.</summary>
    public long ShadowFileLimit { get; init; } = 64L << 20;

    /// <summary>Memory for all followed files together; beyond it every shadow is dropped (files are read again).</summary>
    public long ShadowBudget { get; init; } = 512L << 20;

    /// <summary>Starts following a file known to be empty now (the backend saw the open that created it).</summary>
    public void FollowEmpty(int root, string rel, int? mode = null)
    {
        DropShadow(root, rel);
        var shadow = FileShadow.Empty();
        shadow.Mode = mode;
        _shadows[(root, rel)] = shadow;
    }

    /// <summary>
    /// A mode change the backend carried, at <paramref name="seq"/>: a followed file stores its copy with the new
    /// mode, any other known file or directory its last version with the new mode.
    /// </summary>
    public void ApplyMode(int root, string rel, int mode, long seq, long timeNs)
    {
        if (!_paths.TryGetValue((root, rel), out var state) || state.Kind == EntryKind.Absent)
        {
            return;
        }

        if (_shadows.TryGetValue((root, rel), out var shadow))
        {
            shadow.Mode = mode;
            Observe(root, rel, seq, timeNs);
            return;
        }

        Store(root, rel, state.Version with { Seq = seq, TimeNs = timeNs, Mode = mode }, state.Stat with { Mode = mode });
    }

    /// <summary>
    /// Applies written bytes to the followed copy of a file (starting to follow it from a read of the file when
    /// needed). False when the file cannot be followed (too big, unreadable, not a file): read it instead.
    /// </summary>
    public bool ApplyWrite(int root, string rel, long offset, ReadOnlySpan<byte> bytes)
    {
        if (Follow(root, rel) is not { } shadow || offset + bytes.Length > ShadowFileLimit)
        {
            DropShadow(root, rel);
            return false;
        }

        var before = shadow.Footprint;
        shadow.Write(offset, bytes);
        return Account(shadow.Footprint - before);
    }

    /// <summary>Applies a new size to the followed copy of a file; false when it cannot be followed.</summary>
    public bool ApplyTruncate(int root, string rel, long size)
    {
        if (size == 0)
        {
            FollowEmpty(root, rel);
            return true;
        }

        if (Follow(root, rel) is not { } shadow || size > ShadowFileLimit)
        {
            DropShadow(root, rel);
            return false;
        }

        var before = shadow.Footprint;
        shadow.Truncate(size);
        return Account(shadow.Footprint - before);
    }

    /// <summary>The size of the followed copy of a file, or null when it is not followed.</summary>
    public long? FollowedSize(int root, string rel) => _shadows.TryGetValue((root, rel), out var s) ? s.Size : null;

    /// <summary>Stops following a file: its next version is read from the file.</summary>
    public void DropShadow(int root, string rel)
    {
        if (_shadows.Remove((root, rel), out var s))
        {
            _shadowBytes -= s.Footprint;
        }
    }

    /// <summary>Moves a followed file to its new name (a rename).</summary>
    public void MoveShadow(int root, string from, string to)
    {
        DropShadow(root, to);
        if (_shadows.Remove((root, from), out var s))
        {
            _shadows[(root, to)] = s;
        }
    }

    /// <summary>A directory rename: every followed file below it keeps its copy under the new name.</summary>
    public void MoveShadowsBelow(int root, string from, string to)
    {
        foreach (var key in _shadows.Keys.Where(k => k.Root == root && TracePath.IsAtOrBelow(k.Rel, from)).ToList())
        {
            MoveShadow(root, key.Rel, to + key.Rel[from.Length..]);
        }
    }

    /// <summary>Stops following every file: rescans compare with the files themselves.</summary>
    public void DropShadows()
    {
        _shadows.Clear();
        _shadowBytes = 0;
    }

    private FileShadow? Follow(int root, string rel)
    {
        if (_shadows.TryGetValue((root, rel), out var shadow))
        {
            return shadow;
        }

        // Not followed yet (it existed before, or was written by something we do not see): start from the file as
        // it is now. That state may already include later changes; replaying them on top converges to the truth.
        try
        {
            var abs = TreeWalker.Join(_roots[root], rel);
            if (EntryStat.Lstat(abs) is not { Kind: EntryKind.File } st || st.Size > ShadowFileLimit)
            {
                return null;
            }

            var fd = LongPath.Open(abs, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
            if (fd < 0)
            {
                return null; // gone, replaced by a symlink, or unreadable: read it later instead
            }

            using var handle = new SafeFileHandle(fd, ownsHandle: true);
            var data = new byte[RandomAccess.GetLength(handle)];
            var n = 0;
            while (n < data.Length && RandomAccess.Read(handle, data.AsSpan(n), n) is var r && r > 0)
            {
                n += r;
            }

            shadow = FileShadow.Of(n == data.Length ? data : data[..n]);
            // The mode of the last version is the one known at this point; the file's may already be a later one.
            shadow.Mode = _paths.TryGetValue((root, rel), out var known) && known.Kind == EntryKind.File ? known.Stat.Mode : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        _shadows[(root, rel)] = shadow;
        Account(shadow.Footprint);
        return shadow;
    }

    private bool Account(long grew)
    {
        _shadowBytes += grew;
        if (_shadowBytes > ShadowBudget)
        {
            DropShadows();
            return false;
        }

        return true;
    }

    /// <summary>The last known stat of a path (null if unknown or absent).</summary>
    public EntryStat? Known(int root, string rel) =>
        _paths.TryGetValue((root, rel), out var s) && s.Kind != EntryKind.Absent ? s.Stat : null;

    public long PathId(int root, string rel) => _writer.PathId(_rootIds[root], rel);

    /// <summary>Every path currently known present at or below <paramref name="rel"/>.</summary>
    public List<string> LiveAtOrBelow(int root, string rel) =>
        _paths.Where(kv => kv.Key.Root == root && kv.Value.Kind != EntryKind.Absent && TracePath.IsAtOrBelow(kv.Key.Rel, rel))
            .Select(kv => kv.Key.Rel).OrderBy(r => r, StringComparer.Ordinal).ToList();

    public IEnumerable<(int Root, string Rel)> AllLive() =>
        _paths.Where(kv => kv.Value.Kind != EntryKind.Absent).Select(kv => kv.Key).ToList();

    /// <summary>
    /// A rename at <paramref name="seq"/>: every path known present at or below <paramref name="from"/> gets the
    /// version it had, under its new name. Returns the new names given a version.
    /// </summary>
    public HashSet<string> CarryOver(int root, string from, string to, long seq, long timeNs)
    {
        var carried = new HashSet<string>(StringComparer.Ordinal);
        foreach (var rel in LiveAtOrBelow(root, from))
        {
            var state = _paths[(root, rel)];
            var newRel = to + rel[from.Length..];
            Store(root, newRel, state.Version with { PathId = PathId(root, newRel), Seq = seq, TimeNs = timeNs }, state.Stat);
            carried.Add(newRel);
        }

        return carried;
    }

    /// <summary>A directory made at <paramref name="seq"/> with <paramref name="mode"/>; owner and mtime from <paramref name="now"/> if it is still there.</summary>
    public void NewDirectory(int root, string rel, int mode, EntryStat? now, long seq, long timeNs)
    {
        var st = now is { Kind: EntryKind.Directory } d ? d with { Mode = mode }
            : new EntryStat(EntryKind.Directory, mode, 0, 0, (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100, 0, 0);
        Store(root, rel, new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Directory, st.Mode, st.Uid, st.Gid, st.MtimeNs, 0, null, null, null), st);
    }

    /// <summary>A symlink made at <paramref name="seq"/>; owner and mtime from <paramref name="now"/> if it is still there.</summary>
    public void NewSymlink(int root, string rel, string target, EntryStat? now, long seq, long timeNs)
    {
        var st = now is { Kind: EntryKind.Symlink } l ? l
            : new EntryStat(EntryKind.Symlink, 0x1FF, 0, 0, (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100, target.Length, 0);
        Store(root, rel, new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Symlink, st.Mode, st.Uid, st.Gid, st.MtimeNs, target.Length, null, target, null), st);
    }

    /// <summary>Stores an absent version if the path was present.</summary>
    public void MarkAbsent(int root, string rel, long seq, long timeNs)
    {
        DropShadow(root, rel);
        if (!_paths.TryGetValue((root, rel), out var state) || state.Kind == EntryKind.Absent)
        {
            return;
        }

        Store(root, rel, new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Absent, 0, 0, 0, 0, 0, null, null, null), default);
    }

    /// <summary>
    /// Looks at the path now and stores a version if it changed. With <paramref name="statOnly"/>, a file whose
    /// lstat (kind, mode, owner, size, mtime, inode) is unchanged is not read (rescans).
    /// With <paramref name="keepIfGone"/>, a path found gone keeps its version: the backend reports deletions itself,
    /// at their own event, and the read may come after later events not handled yet.
    /// Returns the stat seen (null: absent), and whether a version was stored.
    /// </summary>
    public (EntryStat? Stat, bool Changed) Observe(int root, string rel, long seq, long timeNs, bool statOnly = false, bool keepIfGone = false)
    {
        try
        {
            return ObserveCore(root, rel, seq, timeNs, statOnly, keepIfGone);
        }
        catch (IOException e)
        {
            // Unreadable (permission denied, I/O error): the recording goes on without this state of the path.
            if (_warned.Add((root, rel)))
            {
                _log.WriteLine($"diffkeeper: {e.Message}; its content is not recorded");
            }

            return (Known(root, rel), false);
        }
    }

    private (EntryStat? Stat, bool Changed) ObserveCore(int root, string rel, long seq, long timeNs, bool statOnly, bool keepIfGone = false)
    {
        var abs = TreeWalker.Join(_roots[root], rel);
        var stat = EntryStat.Lstat(abs);
        _paths.TryGetValue((root, rel), out var known);
        if (_shadows.TryGetValue((root, rel), out var shadow))
        {
            return ObserveShadow(root, rel, seq, timeNs, shadow, stat, known);
        }
        if (keepIfGone && stat is null)
        {
            return (Known(root, rel), false);
        }

        if (stat is null || stat.Value.Kind is null)
        {
            var had = known is not null && known.Kind != EntryKind.Absent;
            MarkAbsent(root, rel, seq, timeNs);
            return (null, had);
        }

        var st = stat.Value;
        if (statOnly && known is not null && known.Kind == st.Kind && known.Stat == st)
        {
            return (st, false);
        }

        NewVersion version;
        switch (st.Kind)
        {
            case EntryKind.Directory:
                version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Directory, st.Mode, st.Uid, st.Gid, st.MtimeNs, 0, null, null, null);
                break;
            case EntryKind.Symlink:
                string? target;
                target = LongPath.ReadLink(abs);

                if (target is null)
                {
                    return ObserveCore(root, rel, seq, timeNs, false, keepIfGone); // replaced while we looked
                }

                version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Symlink, st.Mode, st.Uid, st.Gid, st.MtimeNs, target.Length, null, target, null);
                break;
            default:
                var read = ReadFile(abs, seq, timeNs, root, rel, out st);
                if (read is null)
                {
                    return ObserveCore(root, rel, seq, timeNs, false, keepIfGone);
                }

                version = read;
                break;
        }

        if (known is not null && known.Same(version))
        {
            known.Stat = st;
            return (st, false);
        }

        Store(root, rel, version, st);
        return (st, true);
    }

    /// <summary>
    /// A version from the followed copy of a file. The file itself may have changed since (or be gone): only its
    /// metadata is taken from it, and only while it still has the copy's size; otherwise the last known metadata.
    /// </summary>
    private (EntryStat? Stat, bool Changed) ObserveShadow(int root, string rel, long seq, long timeNs, FileShadow shadow, EntryStat? now, PathState? known)
    {
        var basis = now is { Kind: EntryKind.File } n && n.Size == shadow.Size ? n
            : known is { Kind: EntryKind.File } ? known.Stat
            : now is { Kind: EntryKind.File } m ? m
            : new EntryStat(EntryKind.File, 0x1A4, 0, 0, (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100, 0, 0); // gone already: its mtime was about now
        var st = basis with { Size = shadow.Size, Mode = shadow.Mode ?? basis.Mode };
        var content = shadow.Store(_writer);
        RawBytes += content.Size;
        var version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.File, st.Mode, st.Uid, st.Gid, st.MtimeNs,
            content.Size, content.ContentId, null, content.Extents);
        if (known is not null && known.Same(version))
        {
            known.Stat = st;
            return (st, false);
        }

        Store(root, rel, version, st);
        return (st, true);
    }

    private NewVersion? ReadFile(string abs, long seq, long timeNs, int root, string rel, out EntryStat stat)
    {
        stat = default;
        var fd = LongPath.Open(abs, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ENOENT or Libc.ELOOP or Libc.ENOTDIR)
            {
                return null;
            }

            throw new IOException($"cannot read {abs}: {Libc.StrError(errno)}");
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.StatxCall(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var sx) != 0)
        {
            throw new IOException($"cannot stat {abs}: {Libc.StrError(Marshal.GetLastPInvokeError())}");
        }

        stat = EntryStat.From(sx);
        if (stat.Kind != EntryKind.File)
        {
            return null;
        }

        var content = FileIngest.Ingest(_writer, handle, stat.Size, UseAllCores);
        if (content.Size != stat.Size)
        {
            stat = stat with { Size = content.Size };
        }

        RawBytes += content.Size;
        return new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.File, stat.Mode, stat.Uid, stat.Gid, stat.MtimeNs,
            content.Size, content.ContentId, null, content.Extents);
    }

    private void Store(int root, string rel, NewVersion version, EntryStat stat)
    {
        _writer.AddVersion(_sessionId, version);
        VersionsWritten++;
        _paths[(root, rel)] = new PathState(version, stat);
    }

    private sealed class PathState(NewVersion version, EntryStat stat)
    {
        public EntryKind Kind { get; } = version.Kind;

        public EntryStat Stat { get; set; } = stat;

        public NewVersion Version { get; } = version;

        public bool Same(NewVersion v) =>
            v.Kind == Version.Kind && v.Mode == Version.Mode && v.Uid == Version.Uid && v.Gid == Version.Gid &&
            v.MtimeNs == Version.MtimeNs && v.Size == Version.Size && v.Target == Version.Target &&
            (v.ContentId ?? []).AsSpan().SequenceEqual(Version.ContentId ?? []);
    }
}
