using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading.Channels;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Capture.Inotify;

/// <summary>
/// inotify, one watch per directory, read by a dedicated thread. New directories are watched and then scanned,
/// so files created in them before the watch existed are reported as Created. Rename cookies pair MOVED_FROM with
/// MOVED_TO; a MOVED_FROM whose partner never comes (moved out of the roots) is reported as Deleted.
/// IN_Q_OVERFLOW becomes <see cref="CaptureKind.Overflow"/>. No pid: inotify does not know who made a change.
/// </summary>
public sealed unsafe class InotifySource : ICaptureSource
{
    private const uint IN_MODIFY = 0x2;
    private const uint IN_ATTRIB = 0x4;
    private const uint IN_CLOSE_WRITE = 0x8;
    private const uint IN_MOVED_FROM = 0x40;
    private const uint IN_MOVED_TO = 0x80;
    private const uint IN_CREATE = 0x100;
    private const uint IN_DELETE = 0x200;
    private const uint IN_Q_OVERFLOW = 0x4000;
    private const uint IN_IGNORED = 0x8000;
    private const uint IN_ONLYDIR = 0x01000000;
    private const uint IN_DONT_FOLLOW = 0x02000000;
    private const uint IN_EXCL_UNLINK = 0x04000000;
    private const uint IN_ISDIR = 0x40000000;
    private const int IN_NONBLOCK = 0x800;
    private const int IN_CLOEXEC = 0x80000;
    private const int ENOSPC = 28;

    private const uint WatchMask = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO |
        IN_CREATE | IN_DELETE | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK;

    private readonly IReadOnlyList<string> _roots;
    private readonly PathFilter _filter;
    private readonly Dictionary<int, (int Root, string Rel)> _byWd = [];
    private readonly Dictionary<(int Root, string Rel), int> _byPath = new(PathKeyComparer.Instance);
    private readonly List<(uint Cookie, int Root, string Rel, bool IsDir)> _pendingMoves = [];
    // Directories whose watch could not be added by the name known for them (see RewatchMissed).
    private readonly HashSet<(int Root, string Rel)> _missed = new(PathKeyComparer.Instance);
    // Names whose directory was found watched under another name before their move's events were read (AddWatch).
    private readonly Dictionary<(int Root, string Rel), int> _movedUnread = new(PathKeyComparer.Instance);
    // A rename within a root, held until the next event: renameat2(RENAME_EXCHANGE) is reported as two renames back
    // to back (a to b, then b to a), which together are one exchange.
    private (int Root, string From, string To, bool IsDir, long Now)? _heldMove;
    // The event just handled, when it was a move onto a name whose source was not seen (a directory not watched yet).
    private (int Root, string Rel, bool IsDir)? _unpairedArrival;
    private int _fd = -1;
    private Thread? _thread;
    private ChannelWriter<CaptureEvent>? _sink;
    private readonly StopSignal _stop = new();
    private bool _rewatch;
    private readonly Dictionary<int, (long At, string Name)> _lastWrite = [];
    private readonly Dictionary<int, (long Until, HashSet<string> Names)> _muted = [];

    public InotifySource(IReadOnlyList<string> roots, PathFilter filter)
    {
        _roots = roots;
        _filter = filter;
    }

    public string Name => "inotify";

    public bool ReportsExactNames => false;

    public bool FollowsProcessTree => false;

    /// <summary>
    /// False: the reader mutes hot files and holds a MOVED_FROM for its pair, so an empty queue does not mean every
    /// change is in the sink; `run` proves order with a barrier file in a watched directory instead.
    /// </summary>
    public bool DrainsToNow => false;

    public Task DrainToNowAsync() => throw new NotSupportedException("inotify cannot drain to now; use a barrier file");

    /// <summary>
    /// Stop the kernel from queueing an event for every write into a directory that is being written in a burst
    /// (`record`): after two IN_MODIFY in one directory read less than <see cref="HotGap"/> apart (the time is taken
    /// per read of the queue, so two in one read count as 0 apart; one file appended to, or many files created and
    /// written), its watch drops IN_MODIFY for <see cref="MuteWindow"/>, then takes
    /// it back and reports the files whose writes started the window as modified again, so the recorder reads
    /// their state at its end. Creates, closes, renames, deletes and attribute changes are still reported while
    /// muted. Each queued IN_MODIFY costs the writer about 1 µs in the
    /// kernel (100,000 appends of 100 bytes: 107 ms bare, 193 ms with IN_MODIFY watched, 119 ms without).
    /// What is lost: a write during the window to another file of the same directory that is neither closed nor
    /// written again is seen at the next event for it or at the final scan. Off for keep mode, whose cuts must
    /// know every changed file.
    /// </summary>
    public bool CoalesceWrites { get; init; }

    private static readonly TimeSpan HotGap = TimeSpan.FromMilliseconds(10);

    private static readonly TimeSpan MuteWindow = TimeSpan.FromMilliseconds(50);

    private static readonly long MuteTicks = (long)(MuteWindow.TotalSeconds * Stopwatch.Frequency);

    public void Start(ChannelWriter<CaptureEvent> sink)
    {
        _sink = sink;
        _fd = Libc.InotifyInit1(IN_NONBLOCK | IN_CLOEXEC);
        if (_fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot start inotify: {Libc.StrError(errno)} (raise fs.inotify.max_user_instances)");
        }

        for (var i = 0; i < _roots.Count; i++)
        {
            WatchTree(i, "", reportContents: false);
        }

        _thread = new Thread(ReadLoop) { IsBackground = true, Name = "inotify reader" };
        _thread.Start();
    }

    public Task StopAsync()
    {
        _stop.Set();
        _thread?.Join();
        return Task.CompletedTask;
    }

    private void ReadLoop()
    {
        var buffer = new byte[256 * 1024];
        while (true)
        {
            var stopping = _stop.IsSet;
            var n = ReadOnce(buffer);
            if (n > 0)
            {
                Parse(buffer.AsSpan(0, n));
                if (_rewatch)
                {
                    _rewatch = false;
                    for (var root = 0; root < _roots.Count; root++)
                    {
                        WatchTree(root, "", reportContents: false); // an existing watch is kept
                    }
                }

                if (n < buffer.Length - 4096)
                {
                    FlushPendingMoves(); // the queue was drained: an unpaired MOVED_FROM left the roots
                }

                UnmuteDue();

                continue;
            }

            FlushPendingMoves();
            if (stopping)
            {
                return;
            }

            UnmuteDue();
            if (_stop.Wait(_fd, WaitMs()))
            {
                // Let a burst accumulate before reading: the kernel merges an event identical to the last one
                // still queued, so 100,000 writes to one file become a handful of events instead of 100,000
                // wakeups competing with the recorded program for the CPU.
                Thread.Sleep(1);
            }
        }
    }

    private int ReadOnce(byte[] buffer)
    {
        fixed (byte* p = buffer)
        {
            while (true)
            {
                var n = Libc.Read(_fd, p, buffer.Length);
                if (n >= 0)
                {
                    return (int)n;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno == Libc.EINTR)
                {
                    continue;
                }

                return 0; // EAGAIN: nothing queued
            }
        }
    }

    private void Parse(ReadOnlySpan<byte> data)
    {
        var now = Stopwatch.GetTimestamp();
        var pos = 0;
        while (pos + 16 <= data.Length)
        {
            var wd = BitConverter.ToInt32(data[pos..]);
            var mask = BitConverter.ToUInt32(data[(pos + 4)..]);
            var cookie = BitConverter.ToUInt32(data[(pos + 8)..]);
            var len = (int)BitConverter.ToUInt32(data[(pos + 12)..]);
            var nameBytes = data.Slice(pos + 16, len);
            var nul = nameBytes.IndexOf((byte)0);
            var name = PathBytes.Decode(nul >= 0 ? nameBytes[..nul] : nameBytes);
            pos += 16 + len;
            Handle(wd, mask, cookie, name, now);
        }

        FlushHeldMove();
    }

    private void FlushHeldMove()
    {
        if (_heldMove is { } h)
        {
            _heldMove = null;
            MovedWithin(h.Root, h.From, h.Root, h.To, h.IsDir, h.Now);
        }
    }

    private void Handle(int wd, uint mask, uint cookie, string name, long now)
    {
        if ((mask & IN_Q_OVERFLOW) != 0)
        {
            Emit(new CaptureEvent(CaptureKind.Overflow, 0, "", null, false, now));
            _rewatch = true; // after this batch: directories created while events were lost have no watch yet
            return;
        }

        if ((mask & IN_IGNORED) != 0)
        {
            if (_byWd.Remove(wd, out var gone) && _byPath.TryGetValue(gone, out var current) && current == wd)
            {
                _byPath.Remove(gone);
            }

            return;
        }

        if (name.Length == 0 || !_byWd.TryGetValue(wd, out var dir))
        {
            return;
        }

        // A directory rename held back (to see whether its reverse follows: an exchange) has happened in the kernel,
        // so a watch below it is already at its new name, though not renamed here yet: the second half of an exchange
        // inside a directory just renamed must not be named by the old path (issue 10, batch seed 358991733).
        var dirRel = _heldMove is { IsDir: true } held && held.Root == dir.Root && TracePath.IsAtOrBelow(dir.Rel, held.From)
            ? held.To + dir.Rel[held.From.Length..]
            : dir.Rel;
        var rel = dirRel.Length == 0 ? name : dirRel + "/" + name;
        var root = dir.Root;
        var isDir = (mask & IN_ISDIR) != 0;
        var arrivedJustBefore = _unpairedArrival;
        _unpairedArrival = null;
        if ((mask & (IN_MOVED_FROM | IN_MOVED_TO)) == 0)
        {
            FlushHeldMove();
        }

        if ((mask & IN_MOVED_TO) != 0)
        {
            var from = _pendingMoves.FindIndex(m => m.Cookie == cookie);
            if (from >= 0)
            {
                var m = _pendingMoves[from];
                _pendingMoves.RemoveAt(from);
                if (_heldMove is { } h && h.Root == root && m.Root == root && h.From == rel && h.To == m.Rel)
                {
                    // a to b, then b to a, both still there: one exchange, not two renames (which would leave no b).
                    // Two files, one of them renamed or deleted since: the events alone cannot tell, the recorder's
                    // knowledge of which file each name held can (a directory's watches must be decided here).
                    // A file one way and a directory the other is certain too: two renames move one object back and
                    // forth, of one kind (soak batch: a directory exchanged with a file, then removed at once).
                    // Two directories, one name gone by now: the watch of the directory at the name still there says
                    // which one it is (soak: two baseline directories exchanged, then one renamed away).
                    var certain = h.IsDir != isDir || (EntryStat.Lstat(TreeWalker.Join(_roots[root], rel)) is not null &&
                        EntryStat.Lstat(TreeWalker.Join(_roots[root], m.Rel)) is not null) ||
                        (h.IsDir && isDir && WatchesShowExchange(root, rel, m.Rel));
                    if (certain || !(h.IsDir || isDir))
                    {
                        _heldMove = null;
                        SwapWatches(root, rel, m.Rel);
                        Emit(new CaptureEvent(CaptureKind.Exchanged, root, rel, m.Rel, h.IsDir || isDir, now,
                            Detail: certain ? null : CaptureEvent.UncertainExchange));
                        return;
                    }
                }

                FlushHeldMove();
                DepartBeforeArrivalAt(root, rel);
                if (m.Root == root && !_filter.IsExcluded(root, rel))
                {
                    _heldMove = (root, m.Rel, rel, isDir, now);
                }
                else
                {
                    MovedWithin(m.Root, m.Rel, root, rel, isDir, now);
                }
            }
            else
            {
                FlushHeldMove();
                DepartBeforeArrivalAt(root, rel);
                Arrived(root, rel, isDir, now);
                _unpairedArrival = (root, rel, isDir);
            }

            return;
        }

        if (_filter.IsExcluded(root, rel))
        {
            return;
        }

        if ((mask & IN_MOVED_FROM) != 0)
        {
            if (arrivedJustBefore is { } a && a.Root == root && a.Rel == rel && EntryStat.Lstat(TreeWalker.Join(_roots[root], rel)) is { } there &&
                (there.Kind == EntryKind.Directory) == a.IsDir)
            {
                // Onto this name from an unwatched place, then away from it at once, and what arrived is still there:
                // the two halves the watches saw of
                // an exchange with a directory not watched yet (its halves were missed). What was here left and what
                // arrived stays: the departure is applied, then the arrival again (soak: a baseline directory
                // exchanged with one made deep in new directories in the same burst).
                Departed(root, rel, isDir, now);
                Arrived(root, rel, a.IsDir, now);
                return;
            }

            _pendingMoves.Add((cookie, root, rel, isDir));
        }
        else if ((mask & IN_CREATE) != 0)
        {
            DepartBeforeArrivalAt(root, rel);
            Arrived(root, rel, isDir, now);
        }
        else if ((mask & IN_DELETE) != 0)
        {
            if (isDir)
            {
                ForgetTree(root, rel);
            }

            Emit(new CaptureEvent(CaptureKind.Deleted, root, rel, null, isDir, now));
        }
        else if ((mask & IN_MODIFY) != 0)
        {
            Emit(new CaptureEvent(CaptureKind.Modified, root, rel, null, isDir, now));
            if (CoalesceWrites && !isDir)
            {
                NoteWrite(wd, name, now);
            }
        }
        else if ((mask & IN_CLOSE_WRITE) != 0)
        {
            Emit(new CaptureEvent(CaptureKind.ClosedWrite, root, rel, null, isDir, now));
        }
        else if ((mask & IN_ATTRIB) != 0)
        {
            Emit(new CaptureEvent(CaptureKind.Attributes, root, rel, null, isDir, now));
        }
    }

    private void NoteWrite(int wd, string name, long now)
    {
        if (_muted.TryGetValue(wd, out var muted))
        {
            muted.Names.Add(name); // queued before the mute took effect
            return;
        }

        if (_lastWrite.Remove(wd, out var last) && Stopwatch.GetElapsedTime(last.At, now) <= HotGap)
        {
            Mute(wd, [name, last.Name], now);
            return;
        }

        if (_lastWrite.Count >= 4096)
        {
            _lastWrite.Clear(); // only recent writes matter
        }

        _lastWrite[wd] = (now, name);
    }

    private void Mute(int wd, HashSet<string> names, long now)
    {
        if (SetMask(wd, WatchMask & ~IN_MODIFY))
        {
            _muted[wd] = (MuteEnd(now), names);
        }
    }

    private static long MuteEnd(long now) => now + MuteTicks;

    /// <summary>
    /// Replaces the mask of watch <paramref name="wd"/> through its directory's current name; false when that
    /// name leads elsewhere (renamed or replaced, events not read yet), which is then left as it was.
    /// </summary>
    private bool SetMask(int wd, uint mask)
    {
        var (root, rel) = _byWd[wd];
        var got = LongPath.InotifyAddWatch(_fd, TreeWalker.Join(_roots[root], rel), mask);
        if (got == wd)
        {
            return true;
        }

        if (got >= 0)
        {
            if (_byWd.TryGetValue(got, out var other))
            {
                LongPath.InotifyAddWatch(_fd, TreeWalker.Join(_roots[other.Root], other.Rel), WatchMask);
            }
            else
            {
                Libc.InotifyRmWatch(_fd, got); // a watch this call created on a directory we do not know
            }
        }

        return false;
    }

    /// <summary>Gives muted directories IN_MODIFY back once their window is over, and re-reports their hot files.</summary>
    private void UnmuteDue()
    {
        if (_muted.Count == 0)
        {
            return;
        }

        var now = Stopwatch.GetTimestamp();
        List<int>? due = null;
        foreach (var (wd, muted) in _muted)
        {
            if (now >= muted.Until)
            {
                (due ??= []).Add(wd);
            }
        }

        foreach (var wd in due ?? [])
        {
            var names = _muted[wd].Names;
            if (!_byWd.TryGetValue(wd, out var dir))
            {
                _muted.Remove(wd); // gone
                continue;
            }

            if (!SetMask(wd, WatchMask))
            {
                // Renamed before its events were read: try again once the rename is processed.
                _muted[wd] = (MuteEnd(now), names);
                continue;
            }

            _muted.Remove(wd);
            foreach (var name in names)
            {
                // Only files still there under that name: a temp file renamed or deleted meanwhile has its event.
                var rel = dir.Rel.Length == 0 ? name : dir.Rel + "/" + name;
                if (EntryStat.Lstat(TreeWalker.Join(_roots[dir.Root], rel)) is { Kind: EntryKind.File })
                {
                    Emit(new CaptureEvent(CaptureKind.Modified, dir.Root, rel, null, false, now));
                }
            }
        }
    }

    private int WaitMs()
    {
        if (_muted.Count == 0)
        {
            return 1000;
        }

        var next = _muted.Values.Min(m => m.Until);
        var ms = Stopwatch.GetElapsedTime(Stopwatch.GetTimestamp(), next).TotalMilliseconds;
        return ms <= 0 ? 0 : (int)Math.Ceiling(ms);
    }

    private void MovedWithin(int fromRoot, string fromRel, int toRoot, string toRel, bool isDir, long now)
    {
        var toExcluded = _filter.IsExcluded(toRoot, toRel);
        if (fromRoot == toRoot && !toExcluded)
        {
            if (isDir && !RenameWatches(fromRoot, fromRel, toRel))
            {
                // Renamed before its watch could be added (the watch failed with ENOENT): watch it now, under its
                // new name, and report what is already inside.
                Emit(new CaptureEvent(CaptureKind.Renamed, fromRoot, fromRel, toRel, isDir, now));
                WatchTree(toRoot, toRel, reportContents: true);
                return;
            }

            Emit(new CaptureEvent(CaptureKind.Renamed, fromRoot, fromRel, toRel, isDir, now));
            return;
        }

        Departed(fromRoot, fromRel, isDir, now);
        if (!toExcluded)
        {
            Arrived(toRoot, toRel, isDir, now);
        }
    }

    /// <summary>Moves away whose partner never came (into an unwatched place or out of the tree) are departures: all, or those <paramref name="which"/> picks.</summary>
    private void FlushPendingMoves(Predicate<(uint Cookie, int Root, string Rel, bool IsDir)>? which = null)
    {
        if (_pendingMoves.Count == 0)
        {
            return; // the common case, on every create
        }

        foreach (var m in _pendingMoves.Where(m => which is null || which(m)).ToList())
        {
            Departed(m.Root, m.Rel, m.IsDir, Stopwatch.GetTimestamp());
        }

        _pendingMoves.RemoveAll(m => which is null || which(m));
    }

    /// <summary>
    /// Before something arrives at a name (created, or moved onto it, paired or not): a move away from that name still
    /// pending had its partner missed (into a directory not watched yet), since a rename's two events are queued back
    /// to back. It happened first, so it is applied first; applied when the queue drains, it would delete what
    /// arrived (soaks: a name moved into a new directory, then made again or renamed onto; a baseline directory
    /// exchanged with one made in the same burst).
    /// </summary>
    private void DepartBeforeArrivalAt(int root, string rel) => FlushPendingMoves(p => p.Root == root && p.Rel == rel);

    private void Departed(int root, string rel, bool isDir, long now)
    {
        if (isDir)
        {
            ForgetTree(root, rel, removeWatches: true);
        }

        Emit(new CaptureEvent(CaptureKind.Deleted, root, rel, null, isDir, now));
    }

    private void Arrived(int root, string rel, bool isDir, long now)
    {
        if (_filter.IsExcluded(root, rel))
        {
            return;
        }

        Emit(new CaptureEvent(CaptureKind.Created, root, rel, null, isDir, now));
        if (isDir)
        {
            WatchTree(root, rel, reportContents: true);
        }
    }

    /// <summary>Watches a directory and everything below it; with <paramref name="reportContents"/>, reports what is already inside as Created.</summary>
    private void WatchTree(int root, string rel, bool reportContents)
    {
        if (!AddWatch(root, rel))
        {
            return;
        }

        foreach (var (childRel, stat) in TreeWalker.Walk(_roots[root], root, _filter, rel))
        {
            var isDir = stat.Kind == EntryKind.Directory;
            if (isDir)
            {
                AddWatch(root, childRel);
            }

            if (reportContents)
            {
                Emit(new CaptureEvent(CaptureKind.Created, root, childRel, null, isDir, Stopwatch.GetTimestamp()));
            }
        }
    }

    private bool AddWatch(int root, string rel)
    {
        var abs = TreeWalker.Join(_roots[root], rel);
        var wd = LongPath.InotifyAddWatch(_fd, abs, WatchMask);
        if (wd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            if (errno == ENOSPC)
            {
                throw new DiffKeeperException(ExitCode.SystemError,
                    "inotify ran out of watches; raise the limit with 'sysctl fs.inotify.max_user_watches=1048576' or record a smaller tree");
            }

            if (errno is Libc.ENOENT or Libc.ENOTDIR && _missed.Count < 100_000)
            {
                // Vanished, or a directory above it was renamed since the name was learnt: a rename of that directory,
                // read later, must watch it under its new name (RewatchMissed).
                _missed.Add((root, rel));
            }

            return false; // vanished or not a directory any more: its parent's events tell what happened
        }

        _missed.Remove((root, rel));

        // The kernel returns the existing wd when this inode is already watched (e.g. under a name it had
        // before a rename we have not processed yet): the old name no longer means this directory.
        if (_byWd.TryGetValue(wd, out var previous) && previous != (root, rel) && _byPath.TryGetValue(previous, out var prevWd) && prevWd == wd)
        {
            _byPath.Remove(previous);
            // Kept until the move's events are read: an exchange of this directory with one made in the same burst
            // is told from two renames by it (WatchesShowExchange).
            if (_movedUnread.Count > 10_000)
            {
                _movedUnread.Clear();
            }

            _movedUnread[previous] = wd;
        }

        _movedUnread.Remove((root, rel));

        _byWd[wd] = (root, rel);
        _byPath[(root, rel)] = wd;
        return true;
    }

    /// <summary>
    /// After a directory rename (or exchange; <paramref name="newName"/> maps an old name to its new one, null when
    /// unmoved): a directory below it
    /// whose watch could not be added by its old name (made in the same burst as the rename, its name learnt before the
    /// rename was read) is watched under its new name, and what it holds is reported (issue 10: a directory renamed
    /// right after it was made lost the events of its subdirectories).
    /// </summary>
    private void RewatchMissed(int root, Func<string, string?> newName)
    {
        foreach (var key in _missed.Where(k => k.Root == root).ToList())
        {
            if (newName(key.Rel) is not { } newRel)
            {
                continue;
            }

            _missed.Remove(key);
            if (!_byPath.ContainsKey((root, newRel)) && EntryStat.Lstat(TreeWalker.Join(_roots[root], newRel)) is { Kind: EntryKind.Directory })
            {
                WatchTree(root, newRel, reportContents: true);
            }
        }
    }

    /// <summary>
    /// Whether directories <paramref name="x"/> and <paramref name="y"/> (watched, their renames not applied yet) were
    /// exchanged: true when the name still there holds the other one's directory. The kernel answers
    /// inotify_add_watch on an inode already watched with its existing watch, so the watch tells the directory apart
    /// from a new one at that name; two renames of one directory (x to y over an empty y, then back) would have left
    /// x's directory at x and destroyed y's.
    /// </summary>
    private bool WatchesShowExchange(int root, string x, string y)
    {
        // A name whose directory's watch was taken over by another name before the events were read (the directory
        // was watched again there: see AddWatch) still tells which directory it held.
        var hasX = _byPath.TryGetValue((root, x), out var wdX) || _movedUnread.TryGetValue((root, x), out wdX);
        var hasY = _byPath.TryGetValue((root, y), out var wdY) || _movedUnread.TryGetValue((root, y), out wdY);
        return (hasY && WatchAt(root, x) == wdY) || (hasX && WatchAt(root, y) == wdX);
    }

    /// <summary>The watch of the directory now at <paramref name="rel"/>, or -1; a watch added only to ask is removed again.</summary>
    private int WatchAt(int root, string rel)
    {
        var wd = LongPath.InotifyAddWatch(_fd, TreeWalker.Join(_roots[root], rel), WatchMask);
        if (wd >= 0 && !_byWd.ContainsKey(wd))
        {
            Libc.InotifyRmWatch(_fd, wd);
            return -1;
        }

        return wd;
    }

    /// <summary>An exchange: the watches at or below <paramref name="x"/> are now at or below <paramref name="y"/>, and the other way round.</summary>
    private void SwapWatches(int root, string x, string y)
    {
        var moved = _byPath.Where(kv => kv.Key.Root == root && (TracePath.IsAtOrBelow(kv.Key.Rel, x) || TracePath.IsAtOrBelow(kv.Key.Rel, y))).ToList();
        foreach (var (key, _) in moved)
        {
            _byPath.Remove(key);
        }

        foreach (var (key, wd) in moved)
        {
            var newRel = TracePath.IsAtOrBelow(key.Rel, x) ? y + key.Rel[x.Length..] : x + key.Rel[y.Length..];
            if (_movedUnread.TryGetValue((root, newRel), out var early) && early == wd)
            {
                // Already at its new name: watched again there before the exchange was read (AddWatch).
                _movedUnread.Remove((root, newRel));
                _byPath[key] = wd;
                continue;
            }

            _byWd[wd] = (root, newRel);
            _byPath[(root, newRel)] = wd;
        }

        // A directory made in the same burst and exchanged before its watch was added was never watched (its name
        // led to the other directory): watch it now and report what it holds.
        foreach (var side in (string[])[x, y])
        {
            if (!_byPath.ContainsKey((root, side)) && EntryStat.Lstat(TreeWalker.Join(_roots[root], side)) is { Kind: EntryKind.Directory })
            {
                WatchTree(root, side, reportContents: true);
            }
        }

        RewatchMissed(root, rel => TracePath.IsAtOrBelow(rel, x) ? y + rel[x.Length..] : TracePath.IsAtOrBelow(rel, y) ? x + rel[y.Length..] : null);
    }

    /// <summary>Moves the watches at and below a renamed directory to its new name; false when it had none.</summary>
    private bool RenameWatches(int root, string fromRel, string toRel)
    {
        var moved = _byPath.Where(kv => kv.Key.Root == root && TracePath.IsAtOrBelow(kv.Key.Rel, fromRel)).ToList();
        foreach (var (key, wd) in moved)
        {
            _byPath.Remove(key);
        }

        foreach (var (key, wd) in moved)
        {
            var newRel = toRel + key.Rel[fromRel.Length..];
            _byWd[wd] = (root, newRel);
            _byPath[(root, newRel)] = wd;
        }

        RewatchMissed(root, rel => TracePath.IsAtOrBelow(rel, fromRel) ? toRel + rel[fromRel.Length..] : null);
        return _byPath.ContainsKey((root, toRel));
    }

    private void ForgetTree(int root, string rel, bool removeWatches = false)
    {
        var gone = _byPath.Where(kv => kv.Key.Root == root && TracePath.IsAtOrBelow(kv.Key.Rel, rel)).ToList();
        foreach (var (key, wd) in gone)
        {
            _byPath.Remove(key);
            _byWd.Remove(wd);
            if (removeWatches)
            {
                Libc.InotifyRmWatch(_fd, wd);
            }
        }
    }

    private void Emit(in CaptureEvent e) => _sink!.TryWrite(e);

    public ValueTask DisposeAsync()
    {
        _stop.Set();
        _thread?.Join();
        if (_fd >= 0)
        {
            Libc.Close(_fd);
            _fd = -1;
        }

        _stop.Dispose();
        return ValueTask.CompletedTask;
    }
}
