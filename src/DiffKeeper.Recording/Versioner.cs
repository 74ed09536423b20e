using System.Runtime.InteropServices;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
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
    private readonly PathTable<PathState> _paths = new();
    private readonly HashSet<(int Root, string Rel)> _warned = new(PathKeyComparer.Instance);
    private readonly TextWriter _log;
    // Files whose bytes the recorder follows change by change (exact capture): versions come from here, not reads.
    private readonly PathTable<FileShadow> _shadows = new();
    private long _shadowBytes;
    // The files given a version from a followed copy since the last rescan: a rescan comparing stats would keep the
    // wrong bytes of such a file after a loss, so that rescan reads them again (CopiedFiles).
    private readonly CopiedFiles _copiedSinceScan = new(CopiedLimit);

    /// <summary>
    /// Distinct files remembered by <see cref="TakeCopiedSinceScan"/> before it gives up and names every file (at most
    /// twice as many notes, 4 MB; a keep-mode agent rescans only after a loss, so a churn of new files would otherwise
    /// grow it for days).
    /// </summary>
    public const int CopiedLimit = 1 << 17;
    // Hard links: the names known of every file stored (by device and inode), and the link id of a file with more
    // than one. A change stored for one name is stored for every other name too (they are one file).
    private readonly Dictionary<(ulong Dev, ulong Ino), LinkGroup> _inodes = [];
    private long _lastLinkId;

    public Versioner(TraceWriter writer, long sessionId, IReadOnlyList<string> roots, IReadOnlyList<long> rootIds, TextWriter log)
    {
        _log = log;
        _writer = writer;
        _sessionId = sessionId;
        _roots = roots;
        _rootIds = rootIds;
    }

    public long VersionsWritten { get; private set; }

    /// <summary>
    /// Versions that replaced a chunk stored whole (the path's version before named it, this one does not): what
    /// gives compaction work. New files, files that were empty, and a growing file's earlier tails (slices of the
    /// writer's groups) give it none.
    /// </summary>
    public long ContentsSuperseded { get; private set; }

    /// <summary>Whether file reads may hash and compress on every core (not while the recorded command runs).</summary>
    public bool UseAllCores { get; set; }

    /// <summary>Committed versions read back to seed followed copies (see <see cref="SeedFromStore"/>); null: files are read.</summary>
    public StoredContent? Stored { get; init; }

    /// <summary>Where files above `--big-file` go (block extent maps); null: every file is chunked.</summary>
    public BigFileVersions? BigFiles { get; set; }

    /// <summary>
    /// While set, a file <see cref="BigFiles"/> takes is not stored at its read: its data extents are copied into
    /// memory (one read, no hashing) and <see cref="FinishDeferred"/> stores them. Keep mode sets it while the app
    /// is stopped, so the stop costs a copy of the data, and the hashing and storing happen after it continues;
    /// the version is still the file's exact state at the read.
    /// </summary>
    public bool DeferBigFiles { get; set; }

    private readonly List<(int Root, string Rel, long Seq, long TimeNs, EntryStat Stat, FrozenImage Image)> _deferred = [];

    public long RawBytes { get; private set; }

    /// <summary>Largest file followed change by change; bigger ones are read after each change instead.</summary>
    public long ShadowFileLimit { get; init; } = 64L << 20;

    /// <summary>Memory for all followed files together; beyond it every shadow is dropped (files are read again).</summary>
    public long ShadowBudget { get; init; } = 512L << 20;

    /// <summary>Starts following a file known to be empty now (the backend saw the open that created it).</summary>
    public void FollowEmpty(int root, string rel, int? mode = null, (ulong Device, ulong Inode)? fileId = null)
    {
        // Truncated to 0: the same file, also when its copy was given back at a commit (AfterCommit).
        fileId ??= _shadows.GetValueOrDefault((root, rel))?.FileId ?? _paths.GetValueOrDefault((root, rel))?.DroppedCopyFile;
        DropShadow(root, rel);
        var shadow = FileShadow.Empty();
        shadow.Mode = mode;
        shadow.FileId = fileId;
        shadow.ChangedInCommit = _commits;
        _shadows[(root, rel)] = shadow;
    }

    // Commits of the writer so far (AfterCommit): a copy's last change is dated by it.
    private long _commits;

    /// <summary>
    /// Call after each commit of the writer. A followed copy that no change reached since the commit before this one,
    /// and whose bytes, mode and file are exactly the path's last version (now committed), is dropped and its memory
    /// given back at once; a later change to the file seeds a copy again from that version (<see cref="Stored"/>), the
    /// same bytes. An untar kept a copy of every file it wrote until the end: ~200 MB of blocks, each page new memory
    /// the kernel zeroed on the recorder's thread (a fifth of its time), where blocks given back are used again.
    /// A copy written in every commit interval (a log, a write storm) is kept, and so is the copy of a path whose read
    /// is due (<see cref="ReadPending"/>: its read takes the copy; without it, the file as it is then). Returns how
    /// many were dropped.
    /// </summary>
    public int AfterCommit()
    {
        _commits++;
        // Under a size limit the ring may drop a committed version's bytes: the copy is then the only exact source.
        // Once the trace could not be read back, a copy given back could not be made again: none is.
        if (Stored is not { Available: true } || _writer.SizeLimit is not null || _shadows.Count == 0)
        {
            return 0;
        }

        var idle = _idle;
        idle.Clear();
        foreach (var (key, shadow) in _shadows)
        {
            if (shadow.ChangedInCommit < _commits - 1 && ReadPending?.Invoke(key) != true && IsItsCommittedVersion(key, shadow))
            {
                idle.Add((key, shadow));
            }
        }

        if (idle.Count == 0)
        {
            return 0;
        }

        // A copy still named by another entry (a link the groups no longer show) stays: it is in use.
        var names = _idleNames;
        names.Clear();
        foreach (var (_, shadow) in idle)
        {
            names[shadow] = 0;
        }

        foreach (var (_, shadow) in _shadows)
        {
            if (names.TryGetValue(shadow, out var n))
            {
                names[shadow] = n + 1;
            }
        }

        var dropped = 0;
        foreach (var (key, shadow) in idle)
        {
            if (names[shadow] == 1)
            {
                _paths[key].DroppedCopyFile = shadow.FileId; // what FollowEmpty would have taken from the copy
                _shadows.Remove(key);
                _shadowBytes -= shadow.Footprint;
                shadow.Release();
                dropped++;
            }
        }

        idle.Clear(); // no copy stays reachable from here until the next commit
        names.Clear();
        if (idle.Capacity > 4096)
        {
            idle.Capacity = 0; // a commit that idled a million empty copies does not keep ~50 MB for the process's life
            names.TrimExcess(0);
        }
        return dropped;
    }

    // AfterCommit's copies to drop and their names, kept from commit to commit: each commit of 20,000 creates made a
    // list and a table of the ~800 copies it gave back (~70 KB a commit).
    private readonly List<((int Root, string Rel) Key, FileShadow Shadow)> _idle = [];
    private readonly Dictionary<FileShadow, int> _idleNames = new(ReferenceEqualityComparer.Instance);

    // Whether SeedFromStore would make this copy again from the path's version: the content its last Store gave (nothing
    // changed since), the same mode and file, and one name (hard links share a copy).
    private bool IsItsCommittedVersion((int Root, string Rel) key, FileShadow shadow) =>
        shadow.StoredContent is { } content && shadow.Mode is { } mode && shadow.FileId is { } file &&
        _paths.TryGetValue(key, out var state) && state.Kind == EntryKind.File &&
        state.Version is { Extents: not null, ContentId: { } id } version && version.Size == shadow.Size &&
        id.AsSpan().SequenceEqual(content.ContentId) && state.Stat.Mode == mode && (state.Stat.Device, state.Stat.Inode) == file &&
        GroupOf(key) is not { Count: > 1 };

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

        Store(root, rel, state.Version with { Seq = seq, TimeNs = timeNs, Mode = mode }, state.Stat with { Mode = mode }, readHorizon: state.ReadHorizon);
    }

    /// <summary>
    /// Applies written bytes to the followed copy of a file (starting to follow it from a read of the file when
    /// needed). False when the file cannot be followed (too big, unreadable, not a file): read it instead.
    /// </summary>
    public bool ApplyWrite(int root, string rel, long offset, ReadOnlySpan<byte> bytes)
    {
        // A negative offset: the kernel side took it from the file position after the write, which another thread
        // moved back before the syscall's exit (the record's offset wrapped). Read the file instead.
        if (offset < 0 || Follow(root, rel) is not { } shadow || offset + bytes.Length > ShadowFileLimit)
        {
            DropShadow(root, rel);
            return false;
        }

        var before = shadow.Footprint;
        shadow.Write(offset, bytes);
        return Account(shadow.Footprint - before);
    }

    /// <summary>
    /// Applies a range the kernel copied into a file from another (copy_file_range, sendfile, a clone: no user
    /// buffer held the bytes) to the followed copy of the file written: <paramref name="length"/> bytes of
    /// <paramref name="source"/> as it was at the copy, made at wall time <paramref name="copiedAtNs"/>. They are the
    /// source read now when it provably has not changed since (<see cref="ReadUnchangedSince"/>: any source, in the
    /// tree or not), else this recorder's copy of it as of this event (<see cref="SourceCopy"/>). False when neither
    /// holds, or the file cannot be followed: read the file instead.
    /// </summary>
    public bool ApplyCopy(int root, string rel, long offset, long length, CopiedFrom source, long copiedAt, long copiedAtNs)
    {
        if (offset < 0 || source.Offset < 0 || length <= 0 || offset + length > ShadowFileLimit)
        {
            DropShadow(root, rel); // an offset that wrapped (the file position moved under the syscall), or too big
            return false;
        }

        var read = source.Path is { } path ? ReadUnchangedSince(path, source.File.Inode, source.Offset, length, copiedAtNs) : null;
        var from = read is null && !source.Sized ? SourceCopy(source, copiedAt) : null; // a length taken after the copy: only a proven source
        if ((read is null && (from is null || source.Offset + length > from.Size)) || Follow(root, rel) is not { } shadow)
        {
            DropShadow(root, rel);
            return false;
        }

        // The same file (copy_file_range within one file, ranges apart): growing the copy may move the bytes read.
        ReadOnlySpan<byte> bytes = read ?? (ReferenceEquals(from, shadow) ? from!.Read(source.Offset, (int)length).ToArray() : from!.Read(source.Offset, (int)length));
        var before = shadow.Footprint;
        shadow.Write(offset, bytes);
        return Account(shadow.Footprint - before);
    }

    /// <summary>
    /// This recorder's copy of a copy's source as of the copy (Stopwatch time <paramref name="copiedAt"/>), at the
    /// name the kernel walked then: its followed copy, else one made from its last stored version (for this copy
    /// only: not kept, so nothing piles up when a tree is copied), when those bytes hold no change made after the
    /// copy (their <see cref="FileShadow.ReadHorizon"/> is before it: a read of the file after the copy may hold a
    /// later change whose event is still to come), they are that file (its inode), and no name of it has a read
    /// due (a change read back, its bytes not in any event yet). Null otherwise.
    /// </summary>
    private FileShadow? SourceCopy(CopiedFrom source, long copiedAt)
    {
        if (source.Name is not { } key || (ReadPending is { } pending && (pending(key) || (GroupOf(key) is { } group && group.Any(n => pending(n))))))
        {
            return null;
        }

        var copy = _shadows.TryGetValue(key, out var followed) ? followed
            : _paths.TryGetValue(key, out var known) && known.Inode?.Ino == source.File.Inode ? SeedFromStore(key.Root, key.Rel)
            : null;
        return copy is { ReadHorizon: var horizon, FileId: { } id } && horizon < copiedAt && id.Inode == source.File.Inode ? copy : null;
    }

    /// <summary>
    /// Slack for <see cref="ReadUnchangedSince"/>: a change stamps ctime from the kernel's coarse clock, up to a tick
    /// (4 ms at HZ=250, 10 at HZ=100) before the change, and the copy's wall time is estimated from its monotonic one.
    /// </summary>
    private const long UnchangedSlackNs = 20_000_000;

    // statfs f_type of file systems whose timestamps come from another machine's clock (NFS, SMB/CIFS, FUSE, Ceph, 9p,
    // AFS, Coda, GFS2, OCFS2): their ctime says nothing against this machine's time of the copy.
    private static readonly long[] RemoteClockFileSystems =
        [0x6969, 0x517B, 0xFF534D42, 0xFE534D42, 0x65735546, 0x00C36400, 0x01021997, 0x5346414F, 0x6B414653, 0x73757245, 0x01161970, 0x7461636F];

    // CLOCK_REALTIME less CLOCK_MONOTONIC when the recorder started (set by the first check): a copy's wall time is
    // estimated from its monotonic one, which a step of the wall clock, or a suspend, would make wrong.
    private long? _wallLessMonotonic;

    /// <summary>
    /// <paramref name="length"/> bytes at <paramref name="offset"/> of the regular file at <paramref name="path"/>,
    /// read now, when it is still inode <paramref name="inode"/> and its ctime, taken after the read, is older than
    /// the copy by more than <see cref="UnchangedSlackNs"/>: no change since the copy (a replacement at the name has
    /// a newer ctime too), so these are the bytes copied. Null otherwise: gone, replaced, changed since, short, or
    /// when that ctime cannot be trusted (a file system with another machine's clock, timestamps in whole
    /// milliseconds or coarser, the wall clock stepped since the start). A change through a shared mapping to a
    /// page already dirty stamps no ctime: the one change this cannot see. The device is not compared: the kernel's
    /// superblock device differs from what stat gives on btrfs (a subvolume's).
    /// </summary>
    private byte[]? ReadUnchangedSince(string path, ulong inode, long offset, long length, long copiedAtNs)
    {
        var skew = WallLessMonotonicNow();
        _wallLessMonotonic ??= skew;
        if (Math.Abs(skew - _wallLessMonotonic.Value) > 5_000_000)
        {
            return null;
        }

        var fd = LongPath.Open(path, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            return null;
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.StatxCall(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var first) != 0 || (first.Mode & Libc.S_IFMT) != Libc.S_IFREG ||
            first.Ino != inode || Libc.FileSystemType(fd) is not { } type || RemoteClockFileSystems.Contains(type))
        {
            return null;
        }

        var data = new byte[length];
        var n = 0;
        try
        {
            while (n < data.Length && RandomAccess.Read(handle, data.AsSpan(n), offset + n) is var r && r > 0)
            {
                n += r;
            }
        }
        catch (IOException)
        {
            return null;
        }

        return n == data.Length && Libc.StatxCall(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var st) == 0 &&
            st.CtimeNsec % 1_000_000 != 0 && st.CtimeNs < copiedAtNs - UnchangedSlackNs
            ? data
            : null;
    }

    private static long WallLessMonotonicNow() =>
        RecordingCore.WallNs() - (long)(System.Diagnostics.Stopwatch.GetTimestamp() * (1_000_000_000.0 / System.Diagnostics.Stopwatch.Frequency));

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
        if (_shadows.Remove((root, rel), out var s) && !SharedByAnotherName((root, rel), s))
        {
            _shadowBytes -= s.Footprint;
        }
    }

    /// <summary>Whether another name of the same file still holds <paramref name="shadow"/> (hard links share one copy).</summary>
    private bool SharedByAnotherName((int Root, string Rel) key, FileShadow shadow) =>
        GroupOf(key) is { Count: > 1 } g && g.Any(n => n != key && _shadows.TryGetValue(n, out var o) && ReferenceEquals(o, shadow));

    private LinkGroup? GroupOf((int Root, string Rel) key) =>
        _paths.TryGetValue(key, out var state) && state.Inode is { } inode && _inodes.TryGetValue(inode, out var g) ? g : null;

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

    /// <summary>
    /// The files given a version from a followed copy since the last call, as a set when <paramref name="wanted"/>
    /// (a rescan after a loss; empty otherwise), and <c>All</c>: more than <see cref="CopiedLimit"/>, take every file.
    /// Forgets them.
    /// </summary>
    public (IReadOnlySet<(ulong Device, ulong Inode)> Files, bool All) TakeCopiedSinceScan(bool wanted) => _copiedSinceScan.Take(wanted);

    private void NoteCopied(in EntryStat st) => _copiedSinceScan.Note(st.Device, st.Inode);

    /// <summary>Stops following every file: rescans compare with the files themselves.</summary>
    public void DropShadows()
    {
        _shadows.Clear();
        _shadowBytes = 0;
    }

    // Every change applied to a copy comes through here: it dates the copy's last change (AfterCommit).
    private FileShadow? Follow(int root, string rel)
    {
        var shadow = FollowCore(root, rel);
        if (shadow is not null)
        {
            shadow.ChangedInCommit = _commits;
        }

        return shadow;
    }

    private FileShadow? FollowCore(int root, string rel)
    {
        if (_shadows.TryGetValue((root, rel), out var shadow))
        {
            return shadow;
        }

        // Another name of the same file is followed: its copy is this file's.
        if (GroupOf((root, rel)) is { Count: > 1 } group &&
            group.Select(n => _shadows.GetValueOrDefault(n)).FirstOrDefault(c => c is not null) is { } peer)
        {
            _shadows[(root, rel)] = peer;
            return peer;
        }

        if (ReadPending?.Invoke((root, rel)) == true)
        {
            return null; // seeded from the stored version, the copy would miss the change the read is due for
        }

        var abs = TreeWalker.Join(_roots[root], rel);
        if (SeedFromStore(root, rel) is { } seeded)
        {
            _shadows[(root, rel)] = seeded;
            return Account(seeded.Footprint) ? seeded : null; // over the budget every copy went, this one too
        }

        if (_paths.GetValueOrDefault((root, rel))?.DroppedCopyFile is not null)
        {
            // Its copy was given back at a commit and its version cannot be read back (damaged, unreadable, gone from
            // the catalog): the file as it is now may already hold later changes, so this change is not followed
            // exactly. Null: the caller reads the file back, as for a write whose bytes did not travel.
            return null;
        }

        // Not followed yet (it existed before, or was written by something we do not see): start from the file as
        // it is now. That state may already include later changes; replaying them on top converges to the truth.
        try
        {
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
            var ranges = DataRanges(fd, data.Length);
            var n = 0;
            while (n < data.Length && RandomAccess.Read(handle, data.AsSpan(n), n) is var r && r > 0)
            {
                n += r;
            }

            shadow = FileShadow.Of(n == data.Length ? data : data[..n], ranges, System.Diagnostics.Stopwatch.GetTimestamp());
            shadow.FileId = (st.Device, st.Inode);
            // The mode of the last version is the one known at this point; the file's may already be a later one.
            shadow.Mode = _paths.TryGetValue((root, rel), out var known) && known.Kind == EntryKind.File ? known.Stat.Mode : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        _shadows[(root, rel)] = shadow;
        return Account(shadow.Footprint) ? shadow : null;
    }

    /// <summary>
    /// A copy of a file not followed yet, from the version last stored for it, when that version is committed. Only
    /// backends that carry every change exactly (eBPF) get here, and they report every rename and exchange too: that
    /// version plus the changes that follow is the file at each of them, where a read of the path now would show
    /// later changes at this one's event, another file (exchanged or renamed over since), or nothing at all (issue
    /// 10: the first write to a baseline file renamed at once). Null: read the file.
    /// </summary>
    private FileShadow? SeedFromStore(int root, string rel)
    {
        if (Stored is null || !_paths.TryGetValue((root, rel), out var known) || known.Kind != EntryKind.File ||
            known.Version is not { Extents: { } map, ContentId: not null } version)
        {
            return null;
        }

        if (Stored.TryRead(map, version.Size, ShadowFileLimit) is not { } stored)
        {
            return null;
        }

        var shadow = FileShadow.Of(stored.Data, stored.Ranges, known.ReadHorizon);
        shadow.FileId = (known.Stat.Device, known.Stat.Inode);
        shadow.Mode = known.Stat.Mode;
        return shadow;
    }

    /// <summary>The data extents of an open file (SEEK_DATA/SEEK_HOLE); all of it when the file system cannot tell.</summary>
    private static List<(long Start, long End)> DataRanges(int fd, long size)
    {
        var ranges = new List<(long Start, long End)>();
        for (long pos = 0; pos < size;)
        {
            var start = Libc.Lseek(fd, pos, Libc.SEEK_DATA);
            if (start < 0)
            {
                if (Marshal.GetLastPInvokeError() != Libc.ENXIO)
                {
                    ranges.Add((pos, size));
                }

                break;
            }

            var end = Libc.Lseek(fd, start, Libc.SEEK_HOLE);
            end = end < 0 || end > size ? size : end;
            ranges.Add((start, end));
            pos = end;
        }

        return ranges;
    }

    /// <summary>Applies fallocate(PUNCH_HOLE) to the followed copy of a file; false when it cannot be followed.</summary>
    public bool ApplyPunch(int root, string rel, long offset, long length)
    {
        if (Follow(root, rel) is not { } shadow)
        {
            DropShadow(root, rel);
            return false;
        }

        shadow.Punch(offset, length);
        return true;
    }

    /// <summary>Applies an allocating fallocate (the file is at least <paramref name="atLeast"/> bytes now); false when it cannot be followed.</summary>
    public bool ApplyAllocate(int root, string rel, long atLeast) =>
        Follow(root, rel) is { } shadow && (atLeast <= shadow.Size || ApplyTruncate(root, rel, atLeast));

    /// <summary>
    /// The exact versions a path had in its current hot window and what storing them cost (default: none yet). Kept with
    /// the path's state, which every name stored keeps for good (absent too), so a name deleted and made again keeps
    /// counting: a table of its own was two lookups and an insert per version in a table of every path.
    /// </summary>
    public (long WindowEnd, int Versions, long Bytes) ExactCost(int root, string rel) =>
        _paths.TryGetValue((root, rel), out var s) ? s.ExactCost : default;

    /// <summary>Records <see cref="ExactCost"/> after a version (nothing when the path has no state, e.g. unreadable).</summary>
    public void SetExactCost(int root, string rel, (long WindowEnd, int Versions, long Bytes) cost)
    {
        if (_paths.TryGetValue((root, rel), out var s))
        {
            s.ExactCost = cost;
        }
    }

    /// <summary>What storing the followed copy of a file cost last time (bytes cut and hashed); 0 when it is not followed.</summary>
    public long LastStoreCost(int root, string rel) => _shadows.TryGetValue((root, rel), out var s) ? s.LastStoreCost : 0;

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
        var moving = LiveAtOrBelow(root, from);
        foreach (var rel in moving)
        {
            Detach((root, rel)); // the old names are gone at this event: the new ones are not links of them
        }

        foreach (var rel in moving)
        {
            var state = _paths[(root, rel)];
            var newRel = to + rel[from.Length..];
            Store(root, newRel, state.Version with { PathId = PathId(root, newRel), Seq = seq, TimeNs = timeNs }, state.Stat, state.DroppedCopyFile);
            carried.Add(newRel);
        }

        return carried;
    }

    /// <summary>The other names the recorder knows of the file at a path (hard links); empty for most files.</summary>
    public IEnumerable<string> OtherNames(int root, string rel) =>
        GroupOf((root, rel)) is { Count: > 1 } g ? NamesBut(g, root, rel) : [];

    // Apart from OtherNames: its lambdas' captures made every call allocate, a name with no other names too (~9,000 calls an untar).
    private static List<string> NamesBut(LinkGroup group, int root, string rel) =>
        group.Where(n => n.Root == root && n.Rel != rel).Select(n => n.Rel).ToList();

    /// <summary>Whether both paths are names the recorder knows of one file (hard links): a rename between them changes nothing.</summary>
    public bool SameFile(int root, string a, string b) =>
        _paths.TryGetValue((root, a), out var x) && _paths.TryGetValue((root, b), out var y) && x.Inode is { } inode && y.Inode == inode;

    /// <summary>
    /// renameat2(RENAME_EXCHANGE) at <paramref name="seq"/>: what was at or below <paramref name="x"/> is now at or
    /// below <paramref name="y"/> and the other way round. Names only one side had are stored absent first (deepest
    /// first), then every entry of both sides its version under its new name; followed copies move with them.
    /// </summary>
    public void Exchange(int root, string x, string y, long seq, long timeNs)
    {
        string Swap(string rel) => TracePath.IsAtOrBelow(rel, x) ? y + rel[x.Length..] : x + rel[y.Length..];
        var moved = LiveAtOrBelow(root, x).Concat(LiveAtOrBelow(root, y)).Select(rel => (Rel: rel, State: _paths[(root, rel)])).ToList();
        var shadows = _shadows.Where(kv => kv.Key.Root == root && (TracePath.IsAtOrBelow(kv.Key.Rel, x) || TracePath.IsAtOrBelow(kv.Key.Rel, y))).ToList();
        foreach (var (key, _) in shadows)
        {
            _shadows.Remove(key);
        }

        foreach (var (key, shadow) in shadows)
        {
            _shadows[(root, Swap(key.Rel))] = shadow;
        }

        foreach (var (rel, _) in moved)
        {
            Detach((root, rel)); // the names now hold other files: none is a link of what it held before
        }

        var after = moved.Select(m => Swap(m.Rel)).ToHashSet(StringComparer.Ordinal);
        foreach (var (rel, _) in moved.Where(m => !after.Contains(m.Rel)).OrderByDescending(m => m.Rel, StringComparer.Ordinal))
        {
            Store(root, rel, new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Absent, 0, 0, 0, 0, 0, null, null, null), default);
        }

        foreach (var (rel, state) in moved.OrderBy(m => Swap(m.Rel), StringComparer.Ordinal))
        {
            var newRel = Swap(rel);
            Store(root, newRel, state.Version with { PathId = PathId(root, newRel), Seq = seq, TimeNs = timeNs }, state.Stat, state.DroppedCopyFile);
        }
    }

    /// <summary>
    /// A hard link made at <paramref name="seq"/>: <paramref name="to"/> is a new name of the file at
    /// <paramref name="from"/>, so it gets that file's state (from the followed copy when there is one), and both
    /// names get the file's link id. False when the recorder does not know <paramref name="from"/> as a file: read
    /// the new name instead.
    /// </summary>
    public bool Link(int root, string from, string to, long seq, long timeNs)
    {
        if (!_paths.TryGetValue((root, from), out var state) || state.Kind != EntryKind.File || state.Inode is null)
        {
            return false;
        }

        DropShadow(root, to);
        if (_shadows.TryGetValue((root, from), out var shadow))
        {
            _shadows[(root, to)] = shadow;
        }

        var stat = state.Stat with { Links = Math.Max(2, state.Stat.Links + 1) };
        Store(root, to, state.Version with { PathId = PathId(root, to), Seq = seq, TimeNs = timeNs }, stat, state.DroppedCopyFile);
        if (shadow is not null)
        {
            Observe(root, from, seq, timeNs); // the copy may hold coalesced changes not stored yet: now both names do
        }

        return true;
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
    /// at their own event, and the read may come after later events not handled yet; a path found holding another
    /// kind of entry keeps its version too, for the same reason.
    /// Returns the stat seen (null: absent), and whether a version was stored.
    /// </summary>
    /// <summary>Set when the capture's events carry every mode change of the recorded processes (eBPF): reads then keep a directory's known mode.</summary>
    public bool ModesFromEvents { get; init; }

    /// <summary>Session time now, on the clock of the events' times: lets a followed file's versions share one lstat.</summary>
    public Func<long>? Clock { get; init; }

    /// <summary>
    /// Whether a read of the path is due (a change whose bytes did not travel, waiting in the recorder): such a path's
    /// stored version is not the file any more, and the file now may hold later changes, so a copy is not started
    /// from either until the read is done (the change is read back instead).
    /// </summary>
    public Func<(int Root, string Rel), bool>? ReadPending { get; init; }

    // The last lstat taken for a followed file's version, and the session time just before it was taken. A version of
    // that file for an event at or before that time takes it instead of another lstat: a stat taken after the event
    // is all a fresh one would be (the recorder reads after the fact; a fresh one is only later still, and the copy's
    // own size and file id decide whether its metadata is used, in ObserveShadow). When the recorder lags behind a
    // burst (tar, a file created then written), a file's versions cost one lstat instead of one each.
    private (int Root, string Rel, EntryStat? Stat, long TakenNs)? _followedStat;

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
        _shadows.TryGetValue((root, rel), out var followed);
        EntryStat? stat;
        if (followed is not null && _followedStat is { } recent && recent.Root == root && recent.TakenNs >= timeNs && recent.Rel == rel)
        {
            stat = recent.Stat;
        }
        else
        {
            var taken = Clock?.Invoke() ?? long.MinValue;
            stat = EntryStat.Lstat(_roots[root], rel);
            if (followed is not null)
            {
                _followedStat = (root, rel, stat, taken);
            }
        }

        _paths.TryGetValue((root, rel), out var known);
        if (known is not null && known.Version.Seq > seq)
        {
            // A version was stored at a later event while this read waited (a chmod the backend carried, for a
            // directory waiting to be read after a child changed): what is seen now is from after that event, so it
            // is not dated before it (soak batch seed 1406267029: the later mode showed at the children's #seq).
            seq = known.Version.Seq;
            timeNs = Math.Max(timeNs, known.Version.TimeNs);
        }

        if (keepIfGone && known is not null && known.Kind != EntryKind.Absent && stat is { Kind: { } nowKind } && nowKind != known.Kind)
        {
            // Another kind of entry is there now: the read waited, and a rename, exchange or replacement still queued
            // happened in between. The backend reports that at its own event; stored here, it would be dated at the
            // earlier event (soak, eBPF under load: a directory's read after a child was made saw the file exchanged
            // onto its name, so the export at the mkdir put the child below a file).
            return (Known(root, rel), false);
        }

        if (followed is not null)
        {
            return ObserveShadow(root, rel, seq, timeNs, followed, stat, known);
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
        var readAt = long.MaxValue;
        switch (st.Kind)
        {
            case EntryKind.Directory:
            {
                // A backend whose events carry every mode change (eBPF) knows a directory's mode at each event; a read
                // made after a child changed may already see a chmod whose event is still queued, and would date that
                // mode to the child's event (soak batch, load 15: mkdir D/c then chmod D showed the new mode at the
                // mkdir). Such a read keeps the mode known; a rescan (statOnly) takes what it sees.
                var mode = ModesFromEvents && !statOnly && known is { Kind: EntryKind.Directory } ? known.Version.Mode : st.Mode;
                st = st with { Mode = mode }; // what is known: the chmod's event compares with it, and a rescan too
                version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Directory, mode, st.Uid, st.Gid, st.MtimeNs, 0, null, null, null);
                break;
            }
            case EntryKind.Symlink:
                string? target;
                target = LongPath.ReadLink(TreeWalker.Join(_roots[root], rel));

                if (target is null)
                {
                    return ObserveCore(root, rel, seq, timeNs, false, keepIfGone); // replaced while we looked
                }

                version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.Symlink, st.Mode, st.Uid, st.Gid, st.MtimeNs, target.Length, null, target, null);
                break;
            default:
                var read = ReadFile(seq, timeNs, root, rel, out st, out var deferred);
                readAt = System.Diagnostics.Stopwatch.GetTimestamp(); // the bytes may hold any change made until now
                if (deferred)
                {
                    return (st, true);
                }

                if (read is null)
                {
                    return ObserveCore(root, rel, seq, timeNs, false, keepIfGone);
                }

                version = read;
                break;
        }

        if (known is not null && known.Same(version) && known.Inode == InodeOf(version.Kind, st))
        {
            known.Stat = st;
            known.ReadHorizon = Math.Max(known.ReadHorizon, readAt); // the same bytes, read later: they may hold later changes too
            return (st, false);
        }

        Store(root, rel, version, st, readHorizon: readAt);
        return (st, true);
    }

    /// <summary>
    /// A version from the followed copy of a file. The file itself may have changed since (or be gone): only its
    /// metadata is taken from it, and only while it still has the copy's size; otherwise the last known metadata.
    /// </summary>
    private (EntryStat? Stat, bool Changed) ObserveShadow(int root, string rel, long seq, long timeNs, FileShadow shadow, EntryStat? now, PathState? known)
    {
        var basis = now is { Kind: EntryKind.File } n && n.Size == shadow.Size && (shadow.FileId is null || shadow.FileId == (n.Device, n.Inode)) ? n
            : known is { Kind: EntryKind.File } ? known.Stat
            : now is { Kind: EntryKind.File } m ? m
            : new EntryStat(EntryKind.File, 0x1A4, 0, 0, (DateTimeOffset.UtcNow - DateTimeOffset.UnixEpoch).Ticks * 100, 0, 0); // gone already: its mtime was about now
        var st = basis with { Size = shadow.Size, Mode = shadow.Mode ?? basis.Mode };
        if (shadow.FileId is { } id)
        {
            st = st with { Device = id.Device, Inode = id.Inode }; // the path may hold another file by now
        }

        var content = shadow.Store(_writer, _shadowContent ??= new ChunkedContent(_writer));
        RawBytes += content.Size;
        NoteCopied(st);
        var version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.File, st.Mode, st.Uid, st.Gid, st.MtimeNs,
            content.Size, content.ContentId, null, content.Extents);
        if (known is not null && known.Same(version))
        {
            known.Stat = st;
            known.ReadHorizon = Math.Max(known.ReadHorizon, shadow.ReadHorizon);
            return (st, false);
        }

        Store(root, rel, version, st, readHorizon: shadow.ReadHorizon);
        return (st, true);
    }

    private NewVersion? ReadFile(long seq, long timeNs, int root, string rel, out EntryStat stat, out bool deferred)
    {
        stat = default;
        deferred = false;
        var fd = LongPath.Open(_roots[root], rel, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno is Libc.ENOENT or Libc.ELOOP or Libc.ENOTDIR)
            {
                return null;
            }

            throw new IOException($"cannot read {TreeWalker.Join(_roots[root], rel)}: {Libc.StrError(errno)}");
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.StatxCall(fd, "", Libc.AT_EMPTY_PATH, Libc.STATX_BASIC_STATS, out var sx) != 0)
        {
            throw new IOException($"cannot stat {TreeWalker.Join(_roots[root], rel)}: {Libc.StrError(Marshal.GetLastPInvokeError())}");
        }

        stat = EntryStat.From(sx);
        if (stat.Kind != EntryKind.File)
        {
            return null;
        }

        if (DeferBigFiles && BigFiles?.TryFreeze(handle, stat.Size, root, rel, _paths.GetValueOrDefault((root, rel))?.Version.ContentId) is { } image)
        {
            _deferred.Add((root, rel, seq, timeNs, stat, image));
            deferred = true;
            return null;
        }

        var content = BigFiles?.TryIngest(_writer, handle, stat.Size, root, rel, _paths.GetValueOrDefault((root, rel))?.Version.ContentId)
            ?? FileIngest.Ingest(_writer, handle, stat.Size, UseAllCores, () => _writer.InheritedExtents(PathId(root, rel)));
        if (BigFiles?.LastFromWrites == true)
        {
            NoteCopied(stat); // as a followed copy's version: a write whose record was dropped may be missing from it
        }

        if (content.Size != stat.Size)
        {
            stat = stat with { Size = content.Size };
        }

        RawBytes += content.Size;
        return new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.File, stat.Mode, stat.Uid, stat.Gid, stat.MtimeNs,
            content.Size, content.ContentId, null, content.Extents);
    }

    /// <summary>
    /// Stores the versions of the big files <see cref="DeferBigFiles"/> copied into memory, as
    /// <see cref="Observe"/> would have stored them at their read (same seq, time and metadata), and releases the
    /// copies. Call it before the writer's next commit.
    /// </summary>
    public void FinishDeferred()
    {
        try
        {
            foreach (var (root, rel, seq, timeNs, stat, image) in _deferred)
            {
                _paths.TryGetValue((root, rel), out var known);
                var content = BigFiles!.IngestImage(_writer, image, root, rel, known?.Version.ContentId);
                var st = content.Size != stat.Size ? stat with { Size = content.Size } : stat;
                RawBytes += content.Size;
                var version = new NewVersion(PathId(root, rel), seq, timeNs, EntryKind.File, st.Mode, st.Uid, st.Gid, st.MtimeNs,
                    content.Size, content.ContentId, null, content.Extents);
                if (known is not null && known.Same(version) && known.Inode == InodeOf(version.Kind, st))
                {
                    known.Stat = st;
                    known.ReadHorizon = long.MaxValue; // a read whose end is not kept: not known
                    continue;
                }

                Store(root, rel, version, st);
            }
        }
        finally
        {
            foreach (var d in _deferred)
            {
                d.Image.Dispose();
            }

            _deferred.Clear();
        }
    }

    private static (ulong Dev, ulong Ino)? InodeOf(EntryKind kind, EntryStat stat) =>
        kind == EntryKind.File && stat.Inode != 0 ? (stat.Device, stat.Inode) : null;

    /// <summary>
    /// Stores a version of one path, and the same state for every other name the recorder knows of the same file
    /// (hard links), all with the file's link id once it has more than one name. <paramref name="droppedCopyFile"/>:
    /// the file whose copy was given back, when the state comes from another name (a rename, an exchange, a link).
    /// </summary>
    private void Store(int root, string rel, NewVersion version, EntryStat stat, (ulong Device, ulong Inode)? droppedCopyFile = null, long readHorizon = long.MaxValue)
    {
        var key = (root, rel);
        var inode = InodeOf(version.Kind, stat);
        if (_paths.TryGetValue(key, out var old) && old.Inode is { } was && was != inode && _inodes.TryGetValue(was, out var left))
        {
            left.Remove(key);
            if (left.Count == 0)
            {
                _inodes.Remove(was);
            }
        }

        if (inode is not { } id)
        {
            StoreOne(key, version.Link is null ? version : version with { Link = null }, stat, null, droppedCopyFile, readHorizon);
            return;
        }

        if (!_inodes.TryGetValue(id, out var group))
        {
            _inodes[id] = group = new LinkGroup();
        }

        if (stat.Links == 1 && group.Count > 0 && !group.Contains(key))
        {
            // A name joins an inode number whose file has one link: every other name still filed under the number is
            // stale, its file replaced or deleted and the number reused (a rename over a file frees its inode, and the
            // next new file may get the number). Treating them as links stored one file's content under another name
            // (CrashTests, inotify, on ext4).
            group.Clear();
            group.Id = null;
        }

        if (!group.Contains(key))
        {
            group.Add(key);
        }

        if (group.Count > 1)
        {
            group.Id ??= ++_lastLinkId;
        }

        if (version.Link != group.Id)
        {
            version = version with { Link = group.Id }; // not copied when it is right already (a file with one name)
        }

        StoreOne(key, version, stat, id, droppedCopyFile, readHorizon);
        if (group.Count < 2)
        {
            return;
        }

        StoreOtherNames(key, group, version, stat, id, readHorizon);
    }

    // The rest of Store for a file with more names, apart: the lambda's capture of the key made every Store allocate
    // (one object per version, ~35,000 an untar), though nearly every file has one name.
    private void StoreOtherNames((int Root, string Rel) key, LinkGroup group, NewVersion version, EntryStat stat, (ulong Dev, ulong Ino) id, long readHorizon)
    {
        _shadows.TryGetValue(key, out var shadow);
        foreach (var other in group.Where(n => n != key).ToList())
        {
            // One file, one copy: the other names follow this name's copy, or none when this version was read.
            if (_shadows.TryGetValue(other, out var theirs) && !ReferenceEquals(theirs, shadow))
            {
                DropShadow(other.Root, other.Rel);
            }

            if (shadow is not null)
            {
                _shadows[other] = shadow;
            }

            if (_paths.TryGetValue(other, out var peer) && !(peer.Same(version) && peer.Version.Link == version.Link))
            {
                StoreOne(other, version with { PathId = PathId(other.Root, other.Rel) }, stat, id, readHorizon: readHorizon);
            }
        }
    }

    /// <summary>Takes a path out of its file's names, keeping its state (it is about to be replaced or gone).</summary>
    private void Detach((int Root, string Rel) key)
    {
        if (_paths.TryGetValue(key, out var state) && state.Inode is { } inode)
        {
            if (_inodes.TryGetValue(inode, out var group))
            {
                group.Remove(key);
                if (group.Count == 0)
                {
                    _inodes.Remove(inode);
                }
            }

            // The state a rename or exchange carries to the new name: the file its copy was given back for goes too.
            _paths[key] = new PathState(state.Version, state.Stat, null) { ExactCost = state.ExactCost, DroppedCopyFile = state.DroppedCopyFile };
        }
    }

    private void StoreOne((int Root, string Rel) key, NewVersion version, EntryStat stat, (ulong, ulong)? inode,
        (ulong Device, ulong Inode)? droppedCopyFile = null, long readHorizon = long.MaxValue)
    {
        _writer.AddVersion(_sessionId, version);
        VersionsWritten++;
        if (_paths.TryGetValue(key, out var before) && before.Version.Extents is { Length: > 1 } replaced &&
            !(before.Version.ContentId ?? []).AsSpan().SequenceEqual(version.ContentId ?? []) &&
            DropsWholeChunk(replaced, before.Version.Size, version))
        {
            ContentsSuperseded++;
        }

        _paths[key] = new PathState(version, stat, inode)
        {
            ExactCost = before?.ExactCost ?? default,
            DroppedCopyFile = (droppedCopyFile ?? before?.DroppedCopyFile) is { } dropped && inode == dropped ? dropped : null, // still that file
            ReadHorizon = readHorizon,
        };
    }

    /// <summary>
    /// Whether the version before (<paramref name="replaced"/>, an extent map of <paramref name="size"/> bytes) names a
    /// chunk <paramref name="version"/> does not and that is not a slice of a group this writer wrote: a chunk stored
    /// whole that compaction can turn into a delta. A growing file's earlier tails are slices (they stay where they
    /// are), so tar's intermediate states make no work.
    /// </summary>
    private bool DropsWholeChunk(byte[] replaced, long size, NewVersion version)
    {
        var before = _replacedExtents;
        if (!ExtentMap.TryDecode(replaced, size, before))
        {
            return true;
        }

        // A set of the new map's rows, made only when a whole chunk of the old one needs looking up: a growing file's
        // map holds hundreds of chunks, and a scan of the new map per old chunk was quadratic on every version. The new
        // map is decoded only then too: a growing file's tails are slices of a group, and each version decoded it for
        // nothing (two lists a version).
        HashSet<long>? kept = null;
        foreach (var e in before)
        {
            if (_writer.StoredInGroup(e.BlobRowId))
            {
                continue;
            }

            if (kept is null)
            {
                kept = [];
                if (version.Extents is { } map)
                {
                    if (!ExtentMap.TryDecode(map, version.Size, _keptExtents))
                    {
                        return true;
                    }

                    foreach (var a in _keptExtents)
                    {
                        kept.Add(a.BlobRowId);
                    }
                }
            }

            if (!kept.Contains(e.BlobRowId))
            {
                return true;
            }
        }

        return false;
    }

    // The content every followed copy's store builds in (FileShadow.Store), kept from one store to the next.
    private ChunkedContent? _shadowContent;

    // DropsWholeChunk's decoded maps, kept from one version to the next (two lists a version of a growing file).
    private readonly List<Extent> _replacedExtents = [];
    private readonly List<Extent> _keptExtents = [];

    /// <summary>
    /// The names the recorder knows of one file, and its link id once it has more than one. Every file the recorder
    /// stores has one, and nearly all have one name: it holds that name in place (a list of room for one was two
    /// objects per file for the GC to keep).
    /// </summary>
    private sealed class LinkGroup : IEnumerable<(int Root, string Rel)>
    {
        private CompactList<(int Root, string Rel)> _names;

        public long? Id { get; set; }

        public int Count => _names.Count;

        public bool Contains((int Root, string Rel) name) => IndexOf(name) >= 0;

        public void Add((int Root, string Rel) name) => _names.Add(name);

        public void Remove((int Root, string Rel) name)
        {
            if (IndexOf(name) is var i and >= 0)
            {
                _names.RemoveAt(i);
            }
        }

        public void Clear() => _names.Clear();

        private int IndexOf((int Root, string Rel) name)
        {
            for (var i = 0; i < _names.Count; i++)
            {
                if (_names[i] == name)
                {
                    return i;
                }
            }

            return -1;
        }

        public IEnumerator<(int Root, string Rel)> GetEnumerator()
        {
            for (var i = 0; i < _names.Count; i++)
            {
                yield return _names[i];
            }
        }

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    private sealed class PathState(NewVersion version, EntryStat stat, (ulong Dev, ulong Ino)? inode)
    {
        public EntryKind Kind { get; } = version.Kind;

        public (ulong Dev, ulong Ino)? Inode { get; } = inode;

        public EntryStat Stat { get; set; } = stat;

        public NewVersion Version { get; } = version;

        /// <summary>The name's exact versions in its current hot window (RecordingCore's bound), kept by every state of the name.</summary>
        public (long WindowEnd, int Versions, long Bytes) ExactCost { get; set; }

        /// <summary>The file (device, inode) whose followed copy <see cref="AfterCommit"/> gave back, while the name's versions name it.</summary>
        public (ulong Device, ulong Inode)? DroppedCopyFile { get; set; }

        /// <summary>
        /// As <see cref="FileShadow.ReadHorizon"/>, for this version's bytes (long.MaxValue: not known); raised by a later
        /// read that found the same bytes (they are also what the file held then, after changes between).
        /// </summary>
        public long ReadHorizon { get; set; } = long.MaxValue;

        public bool Same(NewVersion v) =>
            v.Kind == Version.Kind && v.Mode == Version.Mode && v.Uid == Version.Uid && v.Gid == Version.Gid &&
            v.MtimeNs == Version.MtimeNs && v.Size == Version.Size && v.Target == Version.Target &&
            (v.ContentId ?? []).AsSpan().SequenceEqual(Version.ContentId ?? []);
    }
}
