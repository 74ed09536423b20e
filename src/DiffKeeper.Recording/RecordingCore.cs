using System.Diagnostics;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Recording;

/// <summary>
/// The recording core shared by `record` (<see cref="Recorder"/>) and `run` (<see cref="Agent.KeepAgent"/>): one
/// session of a trace writer, fed the events of a capture source, turned into timeline entries and versions.
/// <para>
/// Contract. The owner passes in the writer and the source (the CLI chose the backend) and drives the core from one
/// thread: <see cref="Begin"/>, <see cref="Baseline"/>, <see cref="Start"/>, then <see cref="Handle"/> for each event
/// of the recorded roots in the order the source delivered them, <see cref="VersionReady"/> to read the paths whose
/// wait is over (the owner decides when: `record` as they come due, `run` only inside a freeze cut, so what is
/// committed is always the state at a cut), <see cref="RescanIfPending"/> after a loss, and <see cref="Finish"/>.
/// The core never commits on its own except in <see cref="Baseline"/> when asked and in <see cref="Finish"/>; the
/// owner commits (calling <see cref="FlushWrite"/> first) and the writer's BeforeCommit writes parked events.
/// What the source promises decides how events are trusted, never its name: <see cref="ICaptureSource.ReportsExactNames"/>
/// (a renamed name's carried version is its state) and <see cref="ICaptureSource.FollowsProcessTree"/> (a root of
/// "/" is not walked).
/// </para>
/// Hint events make a path dirty: it is read after <c>debounce</c> (a path read recently waits until its hot window
/// ends); exact events (payloads, truncates, modes) are applied to a followed copy and stored without a read.
/// </summary>
internal sealed class RecordingCore
{
    private const int ExactVersionsPerWindow = 256;
    private const long ExactBytesPerWindow = 1L << 20;
    private const long MergeWindowNs = 50_000_000;
    private static readonly TimeSpan ClosedWait = TimeSpan.FromMilliseconds(200);
    private readonly TraceWriter _writer;
    private readonly IReadOnlyList<string> _roots;
    private readonly PathFilter _filter;
    private readonly ICaptureSource _source;
    private readonly TimeSpan _debounce;
    private readonly TimeSpan _hotWindow;
    private readonly TextWriter _log;
    private readonly Dictionary<(int Root, string Rel), (long ReadyAt, long Seq)> _dirty = new(PathKeyComparer.Instance);
    // The earliest each recently read path may be read again.
    private readonly Dictionary<(int Root, string Rel), long> _recentReads = new(PathKeyComparer.Instance);
    private readonly HashSet<(int Root, string Rel)> _announced = new(PathKeyComparer.Instance);
    private Versioner _versioner = null!;
    private long _sessionId;
    private long _startTs;
    private long _seq;
    private long _events;
    private long _lost;
    // The latest CREATE or WRITE event, held back so that the writes that follow it on the same path before it
    // is read merge into it (inotify reports one IN_MODIFY per write(2)); its size is refreshed when it is written.
    private NewEvent? _held;
    private (int Root, string Rel) _heldPath;
    // The held event's size (for a CREATE seen only by name, also its kind) is not known: it is taken from the
    // path's next read, or from an lstat when the event is written before one.
    private bool _heldSizeStale;
    // Held events whose path is about to be read: written when the read's stat fills in their size and kind, so a
    // created file costs one lstat (the read's) instead of three. Every key is also in _dirty; the writer's
    // BeforeCommit writes any left (with an lstat), so a commit never has a later event without these.
    private readonly Dictionary<(int Root, string Rel), NewEvent> _parked = new(PathKeyComparer.Instance);
    private bool _rescanPending;
    // Events were lost since the last rescan: versions made from followed copies since then may miss a change.
    private bool _lossSinceScan;
    private bool _sweepPending;
    private long _sweepAllowedAt;
    // Roots that are not walked (eBPF with --watch /): only paths the tree touched are recorded and re-checked.
    private readonly HashSet<int> _unwalkedRoots = [];
    // eBPF reports every namespace change of the tree in order with the right names: a renamed path's carried version
    // is its state, not a guess to check by reading (fanotify resolves names when it reads an event, so they may
    // be later ones; inotify may have merged events).
    private readonly bool _exactNames;

    /// <param name="roots">The recorded roots; an event's <see cref="CaptureEvent.Root"/> indexes them.</param>
    public RecordingCore(TraceWriter writer, ICaptureSource source, IReadOnlyList<string> roots, PathFilter filter,
        TimeSpan debounce, TimeSpan hotWindow, TextWriter log)
    {
        _writer = writer;
        _source = source;
        _roots = roots;
        _filter = filter;
        _debounce = debounce;
        _hotWindow = hotWindow;
        _log = log;
        _exactNames = source.ReportsExactNames;
        for (var root = 0; root < roots.Count; root++)
        {
            if (source.FollowsProcessTree && roots[root] == "/")
            {
                _unwalkedRoots.Add(root); // the whole file system: no baseline; what the tree touches is recorded
            }
        }

        writer.BeforeCommit = FlushParked;
    }

    public long SessionId => _sessionId;

    public Versioner Versioner => _versioner;

    /// <summary>Timeline entries written so far.</summary>
    public long Events => _events;

    /// <summary>Losses (overflows, a storage failure) so far.</summary>
    public long Lost => _lost;

    /// <summary>Called with each timeline entry's operation as it is added (not EXIT).</summary>
    public Action<ChangeOp>? EventAdded { get; init; }

    /// <summary>Whether some path waits to be read.</summary>
    public bool HasDirty => _dirty.Count > 0;

    /// <summary>The Stopwatch timestamp at which the first waiting path is due (only when <see cref="HasDirty"/>).</summary>
    public long NextReadyAt => _dirty.Values.Min(d => d.ReadyAt);

    /// <summary>Whether a loss asked for a rescan that has not run yet.</summary>
    public bool RescanPending => _rescanPending;

    /// <summary>
    /// Opens the session (its start time <paramref name="startedWallNs"/>; 0 for a store whose restore must not take
    /// it before <see cref="Start"/>) and the versioner.
    /// </summary>
    public void Begin(string command, string cwd, long startedWallNs, long bigFileThreshold, StoredContent? stored)
    {
        _sessionId = _writer.BeginSession(command, cwd, _source.Name, startedWallNs, _roots, out var rootIds);
        if (_unwalkedRoots.Count == 0)
        {
            _writer.InheritBaseline(_sessionId); // the baseline stores only what differs from the last session of these roots
        }

        _versioner = new Versioner(_writer, _sessionId, _roots, rootIds, _log)
        {
            BigFiles = new BigFileVersions(bigFileThreshold), Stored = stored, ModesFromEvents = _exactNames, Clock = NowNs,
            ReadPending = _dirty.ContainsKey,
        };
    }

    /// <summary>The command starts now: the clock of the timeline starts, and the baseline is marked complete (committed).</summary>
    public void Start()
    {
        _startTs = Stopwatch.GetTimestamp();
        _writer.SetSessionStart(_sessionId, WallNs());
        _writer.Commit();
    }

    /// <summary>
    /// Turns one event of the recorded roots into timeline entries, versions of exact changes, and paths to read.
    /// A path longer than PATH_MAX that cannot be looked at is logged and not recorded; the recording goes on.
    /// </summary>
    public void Handle(in CaptureEvent e)
    {
        try
        {
            NoteBigFileWrites(e);
            Apply(e);
        }
        catch (PathTooLongException x)
        {
            // Paths are handled by name and a name longer than PATH_MAX cannot be looked at: that change is
            // not recorded, and the recording goes on (it used to stop, leaving the session unfinished).
            _log.WriteLine($"diffkeeper: {x.Message}; this change is not recorded");
        }
    }

    /// <summary>
    /// Keeps each big file's written ranges while every event about it is a write carrying its range (keep mode and
    /// `record` with eBPF read only those blocks when nothing else can have written the file); any other event about
    /// it, or above it, and
    /// any loss, make its next version a read of the whole file.
    /// </summary>
    private void NoteBigFileWrites(in CaptureEvent e)
    {
        if (_versioner.BigFiles is not { Witness: not null } big)
        {
            return; // only eBPF with a witness reads written blocks alone: nothing to keep per event otherwise
        }

        switch (e.Kind)
        {
            case CaptureKind.Written or CaptureKind.Copied:
                big.NoteWrite(e.Root, e.Path, e.Offset, e.Length);
                break;
            case CaptureKind.Overflow:
                big.ForgetAllWrites();
                break;
            default:
                big.ForgetWrites(e.Root, e.Path);
                if (e.Path2 is { } other)
                {
                    big.ForgetWrites(e.Root, other);
                }

                break;
        }
    }

    /// <summary>
    /// `record` with eBPF, after the command ended, every event was handled and the witness was refreshed a last time:
    /// a big file whose newest version came from its written blocks and which the witness no longer vouches for (a
    /// process outside the tree wrote it, the tree mapped a file shared, ...) is read whole by the reconcile scan that
    /// follows, whatever its stat (the write may have come before that version's read). Returns how many.
    /// </summary>
    public int ReadWholeWhereNotVouched()
    {
        if (_versioner.BigFiles is not { Witness: { } witness } big)
        {
            return 0;
        }

        var again = big.NotVouchedFromWrites((root, rel) =>
        {
            var fd = LongPath.Open(_roots[root], rel, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC | Libc.O_NOCTTY, 0);
            if (fd < 0)
            {
                return true; // gone or replaced: the reconcile scan sees that by itself
            }

            using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
            return witness.Vouches(handle);
        });
        foreach (var key in again)
        {
            MarkDirty(key, immediate: true);
        }

        return again.Count;
    }

    /// <summary>
    /// Call after each commit of the writer: the versioner gives back the copies that are their committed version
    /// (<see cref="Versioner.AfterCommit"/>), except those of paths waiting to be read, whose read takes the copy.
    /// Returns how many were given back.
    /// </summary>
    public int AfterCommit() => _versioner.AfterCommit();

    /// <summary>Asks for a rescan of every root (a lost barrier, an overflow the owner learned of).</summary>
    public void RequestRescan() => _rescanPending = _lossSinceScan = true;

    /// <summary>
    /// Runs the rescan a loss asked for, if any; else the sweep of known files a name gone unread asked for
    /// (<see cref="SweepKnownFiles"/>), at most a twentieth of the time.
    /// </summary>
    public void RescanIfPending()
    {
        if (_rescanPending)
        {
            _rescanPending = false;
            _sweepPending = false; // a rescan reads every changed file too
            Rescan("rescan");
        }
        else if (_sweepPending && Stopwatch.GetTimestamp() >= _sweepAllowedAt)
        {
            _sweepPending = false;
            var started = Stopwatch.GetTimestamp();
            SweepKnownFiles();
            _sweepAllowedAt = Stopwatch.GetTimestamp() + 20 * (Stopwatch.GetTimestamp() - started);
        }
    }

    /// <summary>
    /// A name the recording never read went away (created, maybe written, removed, all before it could be read).
    /// Where names are resolved when events are read, it may have been a hard link to a known file, written
    /// through: no event names the known file (inotify reports a change under the name it came through, and a
    /// link's count changing on the other name reaches no directory watch). Every known file whose lstat differs
    /// from what was recorded is read again. The next quiet moment does it, at most a twentieth of the time.
    /// </summary>
    private void SweepKnownFiles()
    {
        FlushWrite();
        foreach (var (root, rel) in _versioner.AllLive().ToList())
        {
            if (_versioner.Known(root, rel) is { Kind: EntryKind.File } known && !_dirty.ContainsKey((root, rel)) &&
                EntryStat.Lstat(_roots[root], rel) is { Kind: EntryKind.File } stat && stat != known)
            {
                var (observed, changed) = _versioner.Observe(root, rel, _seq + 1, NowNs());
                if (changed && observed is not null)
                {
                    AddEvent(NowNs(), ChangeOp.Write, (root, rel), null, observed.Value.Size, "written through a name since removed", seq: _seq + 1);
                }
            }
        }
    }

    /// <summary>
    /// Ends the session: EXIT, which takes the time it is written so the timeline stays in order (after a reconcile
    /// scan's events), and the session's end.
    /// </summary>
    public void Finish(ChildExit exit)
    {
        FlushWrite();
        FlushParked();
        _writer.AddEvent(_sessionId, new NewEvent(++_seq, NowNs(), ChangeOp.Exit, null, null, exit.Code, null, null, exit.ToString()));
        _events++;
        _writer.FinishSession(_sessionId, NowNs(), exit.Code, _lost);
    }

    /// <summary>After a failed write of the store: forgets what was held for it and gives up the uncommitted changes.</summary>
    public void Abandon()
    {
        _parked.Clear();
        _held = null;
        _writer.AbandonPending(_sessionId);
    }

    /// <summary>
    /// After a failed write: gives up the uncommitted changes (their pack bytes are cut back, freeing the space),
    /// then closes the session with a LOST event saying what was not stored (<paramref name="reason"/>) and the EXIT
    /// event. Throws what the store throws if even that cannot be written.
    /// </summary>
    public void CloseAfterFailure(string reason, ChildExit exit)
    {
        _parked.Clear(); // held events of the given-up transaction: their seq numbers are reused below
        _held = null;
        _seq = _writer.AbandonPending(_sessionId); // a second call gives up only what came after the first
        // Events are committed before the read that stores their content (a version belongs to the latest event
        // that touched its path): those whose version was given up or never read are taken back, so every event
        // the trace keeps rebuilds exactly, and LOST follows the last of them.
        var contentFrom = Math.Min(_writer.AbandonedVersionsFrom, _dirty.Count == 0 ? long.MaxValue : _dirty.Values.Min(d => d.Seq));
        _dirty.Clear();
        if (contentFrom <= _seq)
        {
            _writer.RetractFrom(_sessionId, Math.Max(contentFrom, 1));
            _seq = Math.Max(contentFrom, 1) - 1;
        }

        _lost++;
        _writer.AddEvent(_sessionId, new NewEvent(++_seq, NowNs(), ChangeOp.Lost, null, null, null, null, null,
            $"storage failed ({reason}): the changes after the previous event were not stored"));
        _writer.AddEvent(_sessionId, new NewEvent(++_seq, NowNs(), ChangeOp.Exit, null, null, exit.Code, null, null, exit.ToString()));
        _writer.FinishSession(_sessionId, NowNs(), exit.Code, _lost);
        _events = _seq;
    }

    /// <summary>Stores every entry already there as its version 0 (and commits, when told to).</summary>
    public void Baseline(bool commit)
    {
        _versioner.UseAllCores = true; // nothing to compete with before the command starts
        var baseline = Stopwatch.StartNew();
        var entries = 0L;
        var lastReport = TimeSpan.Zero;
        foreach (var root in Enumerable.Range(0, _roots.Count).Where(r => !_unwalkedRoots.Contains(r)))
        {
            foreach (var (rel, _) in TreeWalker.Walk(_roots[root], root, _filter))
            {
                _versioner.Observe(root, rel, 0, 0);
                entries++;
                if (baseline.Elapsed - lastReport >= TimeSpan.FromSeconds(2))
                {
                    // A big tree takes a while to record before the command starts: say so.
                    lastReport = baseline.Elapsed;
                    _log.WriteLine($"diffkeeper: baseline: {entries} entries, {_versioner.RawBytes >> 20} MiB read so far ({_roots[root]})");
                }
            }
        }

        if (lastReport > TimeSpan.Zero)
        {
            _log.WriteLine($"diffkeeper: baseline done: {entries} entries, {_versioner.RawBytes >> 20} MiB in {baseline.Elapsed.TotalSeconds:0.0} s; starting the command");
        }

        _versioner.UseAllCores = false;
        _writer.EndBaseline(_sessionId);
        if (commit)
        {
            _writer.Commit();
        }
    }

    private void Apply(in CaptureEvent e)
    {
        var timeNs = TimeNs(e.Timestamp);
        var key = (e.Root, e.Path);
        switch (e.Kind)
        {
            case CaptureKind.Overflow:
                _lost++;
                AddEvent(timeNs, ChangeOp.Lost, null, null, null, e.Detail ?? "inotify queue overflow: events were lost; rescanning");
                _rescanPending = _lossSinceScan = true; // once the queue is drained: a storm of overflows costs one rescan, not one each
                return;
            case CaptureKind.Created:
            {
                // A file named by a hint (inotify, fanotify) is read soon anyway: its kind and size come from that
                // read (the held event waits for it), not from an lstat here.
                var byRead = !e.IsDirectory && !e.KnownEmpty;
                // A file the backend saw created empty needs no lstat either: its kind and size are known, and its
                // version's metadata comes from the stat its version takes (one syscall per new file, not two). So
                // only a directory is looked at here.
                var stat = e.IsDirectory ? EntryStat.Lstat(_roots[e.Root], e.Path) : null;
                // A file the backend saw created is a file at this event, whatever the name holds when it is handled
                // (tar's O_EXCL placeholder is a symlink by then).
                var kind = e.KnownEmpty ? EntryKind.File
                    : e.IsDirectory && e.Mode is not null ? EntryKind.Directory
                    : e.Target is not null ? EntryKind.Symlink
                    : stat?.Kind ?? (e.IsDirectory ? EntryKind.Directory : EntryKind.File);
                var op = kind switch { EntryKind.Directory => ChangeOp.Mkdir, EntryKind.Symlink => ChangeOp.Symlink, _ => ChangeOp.Create };
                // A move in from outside is an event of its own even over a known name (a file, an empty directory):
                // what was there is replaced, and a followed copy of it no longer says what the name holds.
                var arrived = e.Detail == CaptureEvent.MovedIn;
                if (arrived)
                {
                    _announced.Add(key);
                    _versioner.DropShadow(e.Root, e.Path);
                }
                else if (!_announced.Add(key) || _versioner.Known(e.Root, e.Path) is not null)
                {
                    // Seen already: a new directory's contents are reported both by the scan made after its watch
                    // was added and by the watch itself.
                    MarkDirty(key, immediate: kind != EntryKind.File);
                    return;
                }

                AddEvent(timeNs, op, key, null, kind == EntryKind.Directory ? null : e.KnownEmpty ? 0 : stat?.Size, arrived ? e.Detail : null,
                    e.Pid, e.Comm, exact: e.KnownEmpty);
                if (arrived && kind == EntryKind.Directory)
                {
                    MarkArrivedBelow(e.Root, e.Path); // read as of this event, the move
                }

                if (byRead && _held is not null && _heldPath == key)
                {
                    _heldSizeStale = true;
                }

                if (e.IsDirectory && e.Mode is { } dirMode)
                {
                    // The backend carried the new directory's mode: it existed at this event, even when it is gone
                    // (rm -r) before a read could see it.
                    FlushWrite();
                    _versioner.NewDirectory(e.Root, e.Path, dirMode, stat, _seq, timeNs);
                }
                else if (e.Target is { } linkTarget)
                {
                    // Likewise a symlink whose target the backend carried.
                    FlushWrite();
                    _versioner.NewSymlink(e.Root, e.Path, linkTarget, stat, _seq, timeNs);
                }
                else if (e.KnownEmpty && kind == EntryKind.File)
                {
                    // The backend saw the open that created it: it was empty then, whatever it holds by now.
                    _versioner.FollowEmpty(e.Root, e.Path, e.Mode, e.FileId);
                    VersionExact(key, timeNs);
                }
                else
                {
                    MarkDirty(key, immediate: kind != EntryKind.File);
                }

                MarkParentDirty(e.Root, e.Path);
                return;
            }

            case CaptureKind.Written or CaptureKind.Copied:
            {
                var exact = false;
                if (e.Payload is { } payload)
                {
                    exact = _versioner.ApplyWrite(e.Root, e.Path, e.Offset, payload.Span);
                    PayloadMemory.KeepAlive(payload); // an eBPF payload's slab is reused once unreachable: not before the copy
                }
                else if (e.Kind == CaptureKind.Copied && e.Source is { } source)
                {
                    // copy_file_range, sendfile: the source's range as recorded up to this event, or as the file
                    // holds it now when it has not changed since the copy (a file outside the watched tree).
                    var copiedAtNs = WallNs() - (long)((Stopwatch.GetTimestamp() - e.Timestamp) * (1_000_000_000.0 / Stopwatch.Frequency));
                    exact = _versioner.ApplyCopy(e.Root, e.Path, e.Offset, e.Length, source, e.Timestamp, copiedAtNs);
                }

                if (!exact)
                {
                    _versioner.DropShadow(e.Root, e.Path); // bytes not carried: the copy no longer matches the file
                }

                var size = exact ? _versioner.FollowedSize(e.Root, e.Path) : EntryStat.Lstat(_roots[e.Root], e.Path)?.Size;
                // Where and how much the write wrote is known whether or not its bytes travelled (a read back too).
                AddEvent(timeNs, ChangeOp.Write, key, null, size, exact ? null : "read back", e.Pid, e.Comm, exact: true,
                    offset: e.Offset, length: e.Length);
                VersionExactOrRead(key, exact, timeNs);
                return;
            }

            case CaptureKind.Truncated:
            {
                var exact = _versioner.ApplyTruncate(e.Root, e.Path, e.Offset);
                AddEvent(timeNs, ChangeOp.Truncate, key, null, e.Offset, exact ? null : "read back", e.Pid, e.Comm);
                VersionExactOrRead(key, exact, timeNs);
                return;
            }

            case CaptureKind.Punched or CaptureKind.Allocated:
            {
                // fallocate, carried exactly (a punched hole, or an allocation that may extend the file).
                var exact = e.Kind == CaptureKind.Punched
                    ? _versioner.ApplyPunch(e.Root, e.Path, e.Offset, e.Length)
                    : _versioner.ApplyAllocate(e.Root, e.Path, e.KeepSize ? 0 : e.Offset + e.Length);
                var size = exact ? _versioner.FollowedSize(e.Root, e.Path) : EntryStat.Lstat(_roots[e.Root], e.Path)?.Size;
                // Both carry their range: the hole punched, or the bytes allocated (zeros where the file had none).
                // The detail tells them from a write of that many bytes (and keeps them out of a burst's byte total).
                var what = e.Kind == CaptureKind.Punched ? "punch hole" : "fallocate";
                AddEvent(timeNs, ChangeOp.Write, key, null, size, exact ? what : what + ", read back", e.Pid, e.Comm, exact: true,
                    offset: e.Offset, length: e.Length);
                VersionExactOrRead(key, exact, timeNs);
                return;
            }

            case CaptureKind.Modified:
            {
                _versioner.DropShadow(e.Root, e.Path); // changed in a way the backend did not carry: read it
                // Only writes close in time merge: when the read lags (a big file, a busy machine), a write seconds
                // later merged into the held event would date the content it leads to back to that event.
                if (_held is { Op: ChangeOp.Create or ChangeOp.Write } held && _heldPath == key && _dirty.ContainsKey(key) &&
                    timeNs - held.TimeNs < MergeWindowNs)
                {
                    _heldSizeStale = true; // one entry per burst: no stat per write
                    MarkDirty(key, immediate: false);
                    return;
                }

                var stat = EntryStat.Lstat(_roots[e.Root], e.Path);
                var known = _versioner.Known(e.Root, e.Path);
                var op = stat is not null && known is not null && stat.Value.Size < known.Value.Size ? ChangeOp.Truncate : ChangeOp.Write;
                AddEvent(timeNs, op, key, null, stat?.Size, null, e.Pid, e.Comm);
                MarkDirty(key, immediate: false);
                return;
            }

            case CaptureKind.ClosedWrite:
                if (_held is not null && _heldPath == key)
                {
                    _heldSizeStale = true; // written while IN_MODIFY was muted: its size is the size at close
                }

                MarkDirty(key, immediate: true, closed: true);
                return;
            case CaptureKind.Attributes:
            {
                // A mode the backend carried is exact at this event, whatever the path is when it would be read (a
                // chmod through a symlink changes the target: that one is looked at like any other). A directory
                // waiting to be read (a child changed) takes it too: its read is dated to the latest event that
                // touches it, which may come after this one (seed 1396172810).
                if (e.Mode is { } mode && _versioner.Known(e.Root, e.Path) is { Kind: EntryKind.File or EntryKind.Directory } was &&
                    (was.Kind == EntryKind.Directory || _versioner.FollowedSize(e.Root, e.Path) is not null || !_dirty.ContainsKey(key)))
                {
                    if (mode != was.Mode)
                    {
                        AddEvent(timeNs, ChangeOp.Chmod, key, null, null, "mode " + Convert.ToString(mode, 8).PadLeft(4, '0'), e.Pid, e.Comm);
                        FlushWrite();
                        _versioner.ApplyMode(e.Root, e.Path, mode, _seq, timeNs);
                    }

                    return;
                }

                var stat = EntryStat.Lstat(_roots[e.Root], e.Path);
                var known = _versioner.Known(e.Root, e.Path);
                if (stat is not null && (known is null || stat.Value.Mode != known.Value.Mode))
                {
                    AddEvent(timeNs, ChangeOp.Chmod, key, null, null, "mode " + Convert.ToString(stat.Value.Mode, 8).PadLeft(4, '0'), e.Pid, e.Comm);
                }

                MarkDirty(key, immediate: true);
                return;
            }

            case CaptureKind.Deleted:
                if (!_exactNames && !e.IsDirectory && _dirty.ContainsKey(key) && _versioner.Known(e.Root, e.Path) is null)
                {
                    _sweepPending = true; // a name gone unread: maybe a hard link written through (SweepKnownFiles)
                }

                AddEvent(timeNs, e.IsDirectory ? ChangeOp.Rmdir : ChangeOp.Delete, key, null, null, null, e.Pid, e.Comm);
                Gone(e.Root, e.Path, e.IsDirectory);
                MarkParentDirty(e.Root, e.Path);
                return;
            case CaptureKind.Exchanged:
            {
                // renameat2(RENAME_EXCHANGE): both subtrees swap names at this event, with the versions they had
                // (and what was waiting to be read moves with them); a backend that resolves names late reads both again.
                var (root, x, y) = (e.Root, e.Path, e.Path2!);
                if (e.Detail == CaptureEvent.UncertainExchange && !LooksExchanged(root, x, y))
                {
                    // Two renames after all: x to y, then y to x.
                    Apply(e with { Kind = CaptureKind.Renamed, Detail = null });
                    Apply(e with { Kind = CaptureKind.Renamed, Path = y, Path2 = x, Detail = null });
                    return;
                }

                AddEvent(timeNs, ChangeOp.Rename, key, (root, y), null, "exchange", e.Pid, e.Comm);
                FlushWrite();
                FlushParked();
                string Swap(string rel) => TracePath.IsAtOrBelow(rel, x) ? y + rel[x.Length..] : x + rel[y.Length..];
                bool Inside((int Root, string Rel) k) => k.Root == root && (TracePath.IsAtOrBelow(k.Rel, x) || TracePath.IsAtOrBelow(k.Rel, y));
                var waiting = _dirty.Where(kv => Inside(kv.Key)).ToList();
                foreach (var (k, _) in waiting)
                {
                    _dirty.Remove(k);
                }

                // Under its new name, a path waiting to be read exists from this event on: its version may not be
                // dated earlier (the export at an earlier event showed the swapped tree, issue 10).
                foreach (var (k, v) in waiting)
                {
                    _dirty[(root, Swap(k.Rel))] = (v.ReadyAt, _seq);
                }

                var announced = _announced.Where(Inside).ToList();
                _announced.ExceptWith(announced);
                _announced.UnionWith(announced.Select(k => (root, Swap(k.Rel))));
                _versioner.Exchange(root, x, y, _seq, timeNs);
                if (!_exactNames)
                {
                    // Names resolved late: read both sides again, what was known and what is there now.
                    var names = _versioner.LiveAtOrBelow(root, x).Concat(_versioner.LiveAtOrBelow(root, y)).Append(x).Append(y)
                        .Concat(TreeWalker.Walk(_roots[root], root, _filter, x).Select(w => w.Rel))
                        .Concat(TreeWalker.Walk(_roots[root], root, _filter, y).Select(w => w.Rel));
                    foreach (var rel in names.Distinct().ToList())
                    {
                        _announced.Add((root, rel));
                        MarkDirty((root, rel), immediate: true);
                    }
                }

                MarkParentDirty(root, x);
                MarkParentDirty(root, y);
                return;
            }

            case CaptureKind.Linked:
            {
                // A hard link: the new name is the old name's file at this event, whatever either holds when it
                // would be read (eBPF reports the old name; other backends see a creation and find the link by inode).
                var to = (e.Root, e.Path2!);
                _announced.Add(to);
                AddEvent(timeNs, ChangeOp.Create, to, null, _versioner.FollowedSize(e.Root, e.Path) ?? _versioner.Known(e.Root, e.Path)?.Size,
                    null, e.Pid, e.Comm, exact: true);
                FlushWrite();
                if (!_versioner.Link(e.Root, e.Path, e.Path2!, _seq, timeNs))
                {
                    MarkDirty(to, immediate: true);
                }

                MarkParentDirty(e.Root, e.Path2!);
                return;
            }

            case CaptureKind.Renamed:
            {
                var to = (e.Root, e.Path2!);
                if (_exactNames && _versioner.SameFile(e.Root, e.Path, e.Path2!) &&
                    EntryStat.Lstat(_roots[e.Root], e.Path)?.Inode == _versioner.Known(e.Root, e.Path2!)?.Inode)
                {
                    // rename(2) between two names of one file does nothing; both names stay. Only eBPF sees such a
                    // call: the kernel reports nothing of it to inotify and fanotify, whose names are read late, so
                    // there one inode at both names means the new name was read after the rename put the file there
                    // (soak: the old name stayed). eBPF reads a name too when a write's bytes did not travel: the
                    // old name must still hold the file as well.
                    return;
                }

                // A backend that tells a directory by looking at the new name (eBPF) cannot when it is gone by then
                // (renamed, then deleted): the recorder's own view says what the old name was.
                var isDir = e.IsDirectory || _versioner.Known(e.Root, e.Path) is { Kind: EntryKind.Directory };
                AddEvent(timeNs, ChangeOp.Rename, key, to, isDir ? null : _versioner.FollowedSize(e.Root, e.Path) ?? EntryStat.Lstat(_roots[e.Root], e.Path2!)?.Size, null, e.Pid, e.Comm);
                if (!isDir)
                {
                    _versioner.MoveShadow(e.Root, e.Path, e.Path2!); // a followed file keeps its exact bytes under the new name
                }
                else
                {
                    _versioner.MoveShadowsBelow(e.Root, e.Path, e.Path2!); // and so do the followed files of a directory
                }

                // Everything at or below the old name moves: what was recorded there, and what was waiting to be
                // read (a child created just before its directory was renamed). They reappear at this event, first
                // with the versions they had (the new names may be gone before they are read), then as read.
                var (root, from, target) = (e.Root, e.Path, e.Path2!);
                var moved = isDir ? _versioner.LiveAtOrBelow(root, from) : [];
                var waiting = _dirty.Keys.Where(k => k.Root == root && (isDir ? TracePath.IsAtOrBelow(k.Rel, from) : k.Rel == from))
                    .Select(k => k.Rel).ToList();
                var carried = _versioner.CarryOver(root, from, target, _seq, timeNs);
                carried.ExceptWith(waiting.Select(rel => target + rel[from.Length..]));
                if (!_exactNames)
                {
                    carried.Clear();
                }
                Gone(root, from, isDir);
                _dirty.Remove(to); // a target created but not read yet: its content is now the renamed file's
                var newNames = moved.Concat(waiting).Select(rel => target + rel[from.Length..]).ToList();
                if (isDir && !_exactNames)
                {
                    // What is inside now, under the new name, whether or not it was seen under the old one (a child
                    // created just before the rename may have vanished from the old name before it was read). Not
                    // under eBPF: every creation is its own event, and a walk now would date later ones back to here.
                    newNames.AddRange(TreeWalker.Walk(_roots[root], root, _filter, target).Select(w => w.Rel));
                }

                // Under eBPF a name whose version was carried over is not read again: a read that finds it already gone
                // (renamed, then deleted before that event is handled) would store it absent at the rename.
                foreach (var rel in newNames.Distinct())
                {
                    (int Root, string Rel) newKey = (root, rel);
                    _announced.Add(newKey);
                    if (!carried.Contains(rel))
                    {
                        MarkDirty(newKey, immediate: true);
                    }
                }

                if (!carried.Contains(target))
                {
                    MarkDirty(to, immediate: true);
                }
                MarkParentDirty(e.Root, e.Path);
                MarkParentDirty(e.Root, e.Path2!);
                return;
            }
        }
    }

    /// <summary>
    /// Whether x to y, then y to x (two names, neither a directory, one of them gone when the events were read) was one
    /// exchange: two renames leave x and no y, so a y that is there now says exchange (x was renamed or deleted since);
    /// so does either name holding the file (same inode) the recorder knew at the other.
    /// </summary>
    private bool LooksExchanged(int root, string x, string y)
    {
        EntryStat? Now(string name) => EntryStat.Lstat(_roots[root], name);
        bool Holds(string name, string other) =>
            _versioner.Known(root, other) is { Kind: not EntryKind.Directory, Inode: not 0 } was &&
            Now(name) is { Kind: not EntryKind.Directory } now && (now.Device, now.Inode) == (was.Device, was.Inode);
        return Now(y) is not null || Holds(y, x) || Holds(x, y);
    }

    /// <summary>After an exact change: its version from the followed copy, or, when it could not be applied, a read.</summary>
    private void VersionExactOrRead((int Root, string Rel) key, bool exact, long timeNs)
    {
        if (exact)
        {
            VersionExact(key, timeNs);
        }
        else
        {
            MarkDirty(key, immediate: true);
        }
    }

    /// <summary>
    /// Stores the followed file's version for the event just added, unless this path already had
    /// <see cref="ExactVersionsPerWindow"/> exact versions (or <see cref="ExactBytesPerWindow"/> bytes of them) in the
    /// current hot window: then it is coalesced like a read, still from the followed bytes, so a file written
    /// 100,000 times a second costs bounded CPU. Every event stays in the timeline either way.
    /// </summary>
    private void VersionExact((int Root, string Rel) key, long timeNs)
    {
        var now = Stopwatch.GetTimestamp();
        var window = (long)(_hotWindow.TotalSeconds * Stopwatch.Frequency);
        var cost = _versioner.ExactCost(key.Root, key.Rel) is var c && c.WindowEnd > now ? c : (WindowEnd: now + window, Versions: 0, Bytes: 0L);
        if (cost.Versions >= ExactVersionsPerWindow || cost.Bytes >= ExactBytesPerWindow)
        {
            MarkDirty(key, immediate: false);
            return;
        }

        FlushWrite();
        _dirty.Remove(key);
        var (seen, _) = _versioner.Observe(key.Root, key.Rel, _seq, timeNs);
        Unpark(key, seen);

        // The cost is what storing the copy cut and hashed (the changed chunks), not the file's size: a big sparse
        // file or a long log appended to costs what changed.
        _versioner.SetExactCost(key.Root, key.Rel, (cost.WindowEnd, cost.Versions + 1, cost.Bytes + _versioner.LastStoreCost(key.Root, key.Rel)));
    }


    /// <summary>The path and everything below it are gone as of the current event.</summary>
    private void Gone(int root, string rel, bool isDirectory)
    {
        FlushWrite();
        var key = (root, rel);
        if (!isDirectory)
        {
            // The common case, kept O(1) (a file written to a temp name and renamed over another is often never
            // read under its first name): a file or symlink has nothing below it.
            _announced.Remove(key);
            Unpark(key, null); // never read: its size stays unknown
            if (_dirty.Remove(key, out var pending) && _versioner.FollowedSize(root, rel) is not null)
            {
                // Coalesced exact changes not stored yet: their state existed until now.
                _versioner.Observe(root, rel, pending.Seq, NowNs());
            }

            _versioner.MarkAbsent(root, rel, _seq, NowNs());
            return;
        }

        _announced.RemoveWhere(k => k.Root == root && TracePath.IsAtOrBelow(k.Rel, rel));
        foreach (var path in _versioner.LiveAtOrBelow(root, rel).AsEnumerable().Reverse())
        {
            _versioner.MarkAbsent(root, path, _seq, NowNs());
        }

        foreach (var k in _dirty.Keys.Where(k => k.Root == root && TracePath.IsAtOrBelow(k.Rel, rel)).ToList())
        {
            Unpark(k, null);
            _dirty.Remove(k);
        }
    }

    /// <summary>
    /// A directory renamed into the tree from outside it brings everything below it, which no event names (eBPF and
    /// fanotify report the one rename; inotify's new watch scans it as well): each entry below is read as of the
    /// move. A child made after the move, walked here before its own event is handled, is dated to the move too.
    /// </summary>
    private void MarkArrivedBelow(int root, string rel)
    {
        foreach (var (below, _) in TreeWalker.Walk(_roots[root], root, _filter, rel))
        {
            if (below != rel)
            {
                // Not announced: a child made after the move has a CREATE of its own to come, which then follows it.
                MarkDirty((root, below), immediate: true);
            }
        }
    }

    private void MarkParentDirty(int root, string rel)
    {
        var parent = TracePath.Parent(rel);
        if (parent.Length > 0)
        {
            MarkDirty((root, parent), immediate: false);
        }
    }

    private void MarkDirty((int Root, string Rel) key, bool immediate, bool closed = false)
    {
        // A hint names the path it came through; the file's other names (hard links) changed with it, and that name
        // may be gone before it is read.
        foreach (var other in _versioner.OtherNames(key.Root, key.Rel))
        {
            MarkOneDirty((key.Root, other), immediate, closed);
        }

        MarkOneDirty(key, immediate, closed);
    }

    private void MarkOneDirty((int Root, string Rel) key, bool immediate, bool closed)
    {
        var now = Stopwatch.GetTimestamp();
        var ready = immediate ? now : now + (long)(_debounce.TotalSeconds * Stopwatch.Frequency);
        // A path read recently waits until its hot window ends: a file written 100,000 times a second is read
        // a few times a second, not 100,000 times, and never more than ~10% of the time (a big file's window
        // grows with what reading it costs). A file its writer closed waits at most ClosedWait: a big file's
        // window (ten times a read that a busy machine makes slow) could otherwise outlast the quiet after its
        // last write, and the content read later would include the next change.
        if (_recentReads.TryGetValue(key, out var last))
        {
            ready = Math.Max(ready, closed ? Math.Min(last, now + (long)(ClosedWait.TotalSeconds * Stopwatch.Frequency)) : last);
        }

        // A new path's first version belongs to the event that created it, so it exists from that event on; a
        // changed path's next version belongs to the latest event that touched it (or its child, for a
        // directory), so no moment shows content from after it.
        var seq = _seq;
        if (_dirty.TryGetValue(key, out var d))
        {
            ready = Math.Min(ready, d.ReadyAt);
            if (_versioner.Known(key.Root, key.Rel) is null)
            {
                seq = d.Seq;
            }
        }

        _dirty[key] = (ready, seq);
    }

    public void VersionReady(long now)
    {
        if (_dirty.Count == 0)
        {
            return;
        }

        var ready = _dirty.Where(kv => kv.Value.ReadyAt <= now).Select(kv => (kv.Key, kv.Value.Seq))
            .OrderBy(k => k.Key.Rel, StringComparer.Ordinal).ToList();
        if (ready.Count == 0)
        {
            return;
        }

        FlushWrite();
        if (_recentReads.Count > 100_000)
        {
            _recentReads.Clear();
        }

        foreach (var (key, seq) in ready)
        {
            _dirty.Remove(key);
            var started = Stopwatch.GetTimestamp();
            var (seen, _) = _versioner.Observe(key.Root, key.Rel, seq, NowNs(), keepIfGone: _exactNames);
            var finished = Stopwatch.GetTimestamp();
            Unpark(key, seen);
            var window = Math.Max((long)(_hotWindow.TotalSeconds * Stopwatch.Frequency), 10 * (finished - started));
            _recentReads[key] = started + window;
        }
    }

    /// <summary>
    /// The walk of every walkable root that the reconcile scan compares with the recording (<see cref="Rescan"/>),
    /// touching none of the recording's state, so any thread may take it: once the command has exited, `record` walks
    /// on another core while the recorder is still catching up with the events (an untar's or 20,000 creates' recorder
    /// ends a second after the command; the walk then cost ~0.1-0.2 s more on the critical path). What a straggling
    /// process of the tree writes after the walk reaches the recording through its events and is read again, since
    /// its stat differs from the walk's.
    /// </summary>
    public List<(int Root, string Rel, EntryStat Stat)> WalkRoots()
    {
        var walked = new List<(int Root, string Rel, EntryStat Stat)>();
        for (var root = 0; root < _roots.Count; root++)
        {
            if (!_unwalkedRoots.Contains(root))
            {
                foreach (var (rel, stat) in TreeWalker.Walk(_roots[root], root, _filter))
                {
                    walked.Add((root, rel, stat));
                }
            }
        }

        return walked;
    }

    /// <summary>Walks every root and stores what differs from the known state (after LOST, and at the end).</summary>
    /// <param name="why">The detail of the events the scan adds.</param>
    /// <param name="walkedRoots">The walkable roots already walked after the command exited (<see cref="WalkRoots"/>); null: walk them now.</param>
    public void Rescan(string why, List<(int Root, string Rel, EntryStat Stat)>? walkedRoots = null)
    {
        FlushWrite();
        FlushParked(); // the scan may clear their paths from _dirty
        _versioner.DropShadows(); // compare with the files themselves
        _versioner.BigFiles?.ForgetAllWrites();
        // After a loss, a file whose version came from its followed copy is read whatever its stat: the copy may lack
        // a write whose record was dropped while the version took the file's final stat (a full eBPF ring).
        var suspect = _lossSinceScan;
        var (copied, allCopied) = _versioner.TakeCopiedSinceScan(wanted: suspect);
        _lossSinceScan = false;
        List<(int Root, string Rel, EntryStat Stat)> walked;
        if (_unwalkedRoots.Count == 0)
        {
            // Every root walked: the walk is the list, in root order (a copy of it was 20,000 creates' largest
            // allocation, ~5 MB on the large-object heap with its doublings, and a cause of a full collection).
            walked = walkedRoots ?? WalkRoots();
        }
        else
        {
            walked = [];
        }

        for (var root = 0; root < _roots.Count && _unwalkedRoots.Count > 0; root++)
        {
            if (_unwalkedRoots.Contains(root))
            {
                // Not walked (the whole file system): re-check what the recording knows of, deepest last.
                var touched = _versioner.AllLive().Concat(_dirty.Keys).Where(k => k.Root == root).Select(k => k.Rel)
                    .Distinct().OrderBy(r => r, StringComparer.Ordinal);
                foreach (var rel in touched)
                {
                    if (EntryStat.Lstat(_roots[root], rel) is { Kind: not null } st)
                    {
                        walked.Add((root, rel, st));
                    }
                }

                continue;
            }

            walkedRoots ??= WalkRoots();
            walked.AddRange(walkedRoots.Where(w => w.Root == root));
        }

        // Deletions first: a directory replaced by a file must lose its children before the file appears, or the
        // moment in between would put a file's children below it (a state export refuses).
        var seen = new HashSet<(int Root, string Rel)>(walked.Count, PathKeyComparer.Instance); // sized once: its doublings were large objects too
        foreach (var w in walked)
        {
            seen.Add((w.Root, w.Rel));
        }

        foreach (var (root, rel) in _versioner.AllLive().Where(k => !seen.Contains(k)).OrderByDescending(k => k.Rel, StringComparer.Ordinal).ToList())
        {
            if (_versioner.Known(root, rel) is not { } gone)
            {
                continue;
            }

            var wasDirectory = gone.Kind == EntryKind.Directory;
            AddEvent(NowNs(), wasDirectory ? ChangeOp.Rmdir : ChangeOp.Delete, (root, rel), null, null, why);
            Gone(root, rel, wasDirectory);
        }

        foreach (var (root, rel, stat) in walked)
        {
            var known = _versioner.Known(root, rel);
            var pending = _dirty.Remove((root, rel)) ||
                (suspect && stat.Kind == EntryKind.File && (allCopied || copied.Contains((stat.Device, stat.Inode))));
            if (!pending && known == stat)
            {
                continue;
            }

            if (known is { Kind: EntryKind.Directory } && stat.Kind == EntryKind.Directory)
            {
                _versioner.Observe(root, rel, _seq, NowNs()); // a directory's mtime: no timeline entry of its own
                continue;
            }

            if (known is not null && known.Value.Kind != stat.Kind)
            {
                // Replaced by another kind (a directory by a file): gone first, then new.
                AddEvent(NowNs(), known.Value.Kind == EntryKind.Directory ? ChangeOp.Rmdir : ChangeOp.Delete, (root, rel), null, null, why);
                Gone(root, rel, known.Value.Kind == EntryKind.Directory);
                known = null;
            }

            var (observed, changed) = _versioner.Observe(root, rel, _seq + 1, NowNs(), statOnly: !pending);
            if (changed)
            {
                var op = observed is null ? ChangeOp.Delete
                    : known is not null ? ChangeOp.Write
                    : observed.Value.Kind switch { EntryKind.Directory => ChangeOp.Mkdir, EntryKind.Symlink => ChangeOp.Symlink, _ => ChangeOp.Create };
                AddEvent(NowNs(), op, (root, rel), null, observed?.Size, why, seq: _seq + 1);
            }
        }

        _dirty.Clear();
    }

    private void AddEvent(long timeNs, ChangeOp op, (int Root, string Rel)? path, (int Root, string Rel)? path2, long? size, string? detail,
        int? pid = null, string? comm = null, long? seq = null, bool exact = false, long? offset = null, long? length = null)
    {
        FlushWrite();
        var s = seq ?? _seq + 1;
        _seq = Math.Max(_seq, s);
        var e = new NewEvent(s, timeNs, op, path is { } p ? _versioner.PathId(p.Root, p.Rel) : null,
            path2 is { } q ? _versioner.PathId(q.Root, q.Rel) : null, size, pid, comm, detail, offset, length);
        _events++;
        EventAdded?.Invoke(op);
        // Hint events merge (inotify's one IN_MODIFY per write); an exact change (a payload) stays on its own.
        if (op is ChangeOp.Write or ChangeOp.Create && path is { } held && detail is null && !exact)
        {
            _held = e;
            _heldPath = held;
            _heldSizeStale = false;
            return;
        }

        _writer.AddEvent(_sessionId, e);
    }

    /// <summary>Writes the event held back for merging, with the path's size as it is now if writes merged into it.</summary>
    public void FlushWrite()
    {
        if (_held is { } e)
        {
            _held = null;
            if (_heldSizeStale)
            {
                if (_dirty.ContainsKey(_heldPath) && _parked.TryAdd(_heldPath, e))
                {
                    return; // written when the path is read
                }

                e = WithStat(e, EntryStat.Lstat(_roots[_heldPath.Root], _heldPath.Rel));
            }

            _writer.AddEvent(_sessionId, e);
        }
    }

    /// <summary>Writes the parked event of a path with what its read saw (null: not seen, the size stays unknown).</summary>
    private void Unpark((int Root, string Rel) key, EntryStat? seen)
    {
        if (_parked.Count > 0 && _parked.Remove(key, out var e))
        {
            _writer.AddEvent(_sessionId, WithStat(e, seen));
        }
    }

    /// <summary>Writes every parked event, each with an lstat of its path (before a commit or a scan).</summary>
    public void FlushParked()
    {
        if (_parked.Count == 0)
        {
            return;
        }

        foreach (var (key, e) in _parked)
        {
            _writer.AddEvent(_sessionId, WithStat(e, EntryStat.Lstat(_roots[key.Root], key.Rel)));
        }

        _parked.Clear();
    }

    /// <summary>A held event completed from a stat of its path: the size, and for a CREATE the kind it names.</summary>
    private static NewEvent WithStat(NewEvent e, EntryStat? stat)
    {
        if (stat is not { } st)
        {
            return e;
        }

        var op = e.Op != ChangeOp.Create ? e.Op
            : st.Kind switch { EntryKind.Directory => ChangeOp.Mkdir, EntryKind.Symlink => ChangeOp.Symlink, _ => ChangeOp.Create };
        return e with { Op = op, Size = st.Kind == EntryKind.Directory ? null : st.Size };
    }

    public long TimeNs(long timestamp) =>
        timestamp <= _startTs ? 0 : (long)((timestamp - _startTs) * (1_000_000_000.0 / Stopwatch.Frequency));

    public long NowNs() => TimeNs(Stopwatch.GetTimestamp());

    public static long WallNs() => (DateTimeOffset.UtcNow.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) * 100;
}
