using System.Diagnostics;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Fanotify;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// The `run` agent: records a state directory into a store while the app runs, committing only consistent cuts.
/// <para>
/// Commit protocol. A cut makes durable a state the app really had at one moment: (1) every process of the app's
/// tree is stopped (<see cref="AppProcessTree.Freeze"/>), so no write is in flight; (2) every event the kernel
/// produced before the freeze is drained and handled: a source that can drain to now (<see cref="ICaptureSource.DrainsToNow"/>:
/// eBPF consumes its ring buffer to empty, fanotify reads its queue until empty) is asked to, and the channel is then
/// read to empty; with inotify a barrier file is created in a private directory watched by the same instance, and
/// events are consumed until its event arrives: inotify queues events in order, so every change the app made
/// before it stopped has now been seen; (3) every
/// path changed since the last cut is read; (4) the app continues; (5) the catalog commits (the pack's records are
/// written first): from then on the cut survives a crash of any process; a separate thread fsyncs the packs
/// and the catalog right behind, for power loss. Between two cuts none of the directory's changes is committed (retention
/// steps commit, but never change a path's newest version), so the store's latest state is always the state
/// of the directory at the moment of some freeze. A cut starts when the changes have been quiet for
/// <see cref="KeepOptions.Debounce"/>, or at the latest <see cref="KeepOptions.MaxAge"/> after the oldest uncommitted change.
/// </para>
/// A session's <see cref="SessionInfo.StartedWallNs"/> stays 0 until its baseline is committed, so a restore never
/// takes the half-recorded baseline of an agent killed while starting (docs/store-format.md).
/// <para>
/// Retention (<see cref="KeepOptions.Retention"/>): a <see cref="RetentionWorker"/> plans prune and gc on its own
/// thread; this thread runs its catalog steps right after a cut's commit and while idle, never with a cut's
/// changes pending, so those commits change no path's newest version and a due cut waits for one step at most.
/// </para>
/// </summary>
public sealed class KeepAgent
{
    private readonly KeepOptions _options;
    private readonly TraceWriter _writer;
    private readonly AgentCounters _counters;
    private readonly TextWriter _log;
    private readonly AppProcessTree _tree = new();
    // When each path changed since the last cut was first changed: a cut is due by the oldest (and the flush-lag
    // histogram counts from it). What is read at the cut is the core's business.
    private readonly Dictionary<(int Root, string Rel), long> _changed = new(PathKeyComparer.Instance);
    // When each change read since the last commit was observed (for the flush-lag histogram).
    private readonly List<long> _reading = [];
    private readonly SemaphoreSlim _syncWanted = new(0, 1);
    private volatile bool _stopSyncing;
    private Channel<CaptureEvent> _channel = null!;
    private RecordingCore _core = null!;
    private string _barrierDir = "";
    private long _barrierSeq;
    private string? _awaitedBarrier;
    private long _storedBefore;
    private RetentionWorker? _retention;
    private ICaptureSource _source = null!;
    // Keep mode with eBPF: vouches that a big file's write events are all its changes (see WriteWitness). The
    // processes of the app's tree it trusts: those stopped at the cut, and those eBPF delivered events of since the
    // last cut (it sends the tree's only). Renewed at each cut, so a pid reused by another process is not trusted long.
    private WriteWitness? _witness;
    private readonly HashSet<int> _eventPids = [];
    private HashSet<int> _treePids = [];

    public KeepAgent(KeepOptions options, TraceWriter writer, AgentCounters counters, TextWriter log)
    {
        _options = options;
        _writer = writer;
        _counters = counters;
        _log = TextWriter.Synchronized(log); // the retention thread logs too
    }

    public long SessionId => _core.SessionId;

    /// <summary>Records until the app exits; returns its exit code (126/127 when it cannot run, 128+N when killed by signal N).</summary>
    public async Task<int> RunAsync(CancellationToken ct)
    {
        _writer.DeferSyncToCaller();
        // Keep mode stores a record per blob, as before groups were written while recording: with them, the 20-kill
        // SQLite test lost transactions acknowledged more than one flush before the kill in 3 of about 12 runs (each
        // time beside other tests or other engineers' builds; never alone on a quiet machine), and what a cut costs
        // with them is not measured yet. Its retention passes group small blobs as before.
        _writer.GroupsSmallBlobs = false;
        _storedBefore = StoreBytes(_writer.TraceDir);
        _barrierDir = Directory.CreateTempSubdirectory("diffkeeper-barrier-").FullName;
        var syncer = new Thread(SyncLoop) { IsBackground = true, Name = "store fsync" };
        syncer.Start();
        try
        {
            return await RecordAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            _retention?.Dispose();
            _witness?.Dispose();
            _stopSyncing = true;
            WantSync();
            syncer.Join();
            _writer.SyncToDisk();
            try
            {
                Directory.Delete(_barrierDir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private async Task<int> RecordAsync(CancellationToken ct)
    {
        // Root 0 is the state directory (recorded); root 1 is the barrier directory (watched, never recorded).
        IReadOnlyList<string> roots = [_options.StateDir, _barrierDir];
        var filter = new PathFilter(roots, _writer.TraceDir, []);
        _channel = Channel.CreateUnbounded<CaptureEvent>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = true });
        if (_options.Capture == CaptureMode.Scan)
        {
            throw new DiffKeeperException(ExitCode.Usage, "run --capture scan: keep mode needs a backend with events (auto, ebpf, fanotify, inotify)");
        }

        // Auto is inotify in keep mode (see KeepOptions.Capture); inotify reports writes one by one (no coalescing): a
        // cut reads each changed path once anyway.
        var capture = _options.Capture == CaptureMode.Auto ? CaptureMode.Inotify : _options.Capture;
        await using var source = CaptureSelection.Start(capture, roots, filter, _channel.Writer, _log,
            maxPayload: 256 * 1024, ringBytes: 64 << 20, coalesceWrites: false);
        _source = source;
        _counters.Capture = source.Name;
        // The core reads only inside a cut (ReadCut): its debounce and hot window do not apply here.
        _core = new RecordingCore(_writer, source, [_options.StateDir], filter, TimeSpan.Zero, TimeSpan.Zero, _log)
        {
            EventAdded = _counters.CountEvent,
        };
        _core.Begin(string.Join(' ', _options.Command), _options.Cwd, 0, _options.BigFileThreshold, stored: null);
        if (source.UnseenWriters is not null)
        {
            _witness = WriteWitness.TryCreate(out var why);
            if (_witness is null)
            {
                _log.WriteLine($"diffkeeper: big files are read whole at every cut: cannot watch them for writers outside the app ({why})");
            }

            _core.Versioner.BigFiles!.Witness = _witness;
        }

        _core.Baseline(commit: false);
        _core.Start(); // the marker: this session's baseline is complete
        _witness?.ScanNewWatches(_ => false); // big files of the baseline: the app has not started yet
        UpdateCounters();
        if (_options.Retention is { } retention)
        {
            _retention = new RetentionWorker(retention, _writer, _counters, _log);
            _retention.Start();
        }

        if (!AppProcessTree.BecomeSubreaper())
        {
            _log.WriteLine("diffkeeper: cannot become a child subreaper; processes the app leaves behind are not frozen during cuts");
        }

        var exit = ChildExit.Exited(0);
        ChildProcess? child = null;
        try
        {
            child = ChildProcess.Start(_options.Command, _options.Cwd);
        }
        catch (DiffKeeperException e) when (e.Code is ExitCode.CommandNotFound or ExitCode.CannotExecute)
        {
            _log.WriteLine($"diffkeeper: {e.Message}");
            exit = ChildExit.Exited((int)e.Code); // 126 and 127 as README documents
        }

        using (child)
        {
            _counters.AppRunning = child is not null;
            if (child is not null)
            {
                exit = await LoopAsync(child, ct).ConfigureAwait(false);
            }

            _counters.AppRunning = false;
        }

        _retention?.Stop(); // the last cut and the session's end do not wait behind a pass

        // The app is gone; what it (or a process it left behind) wrote last is cut and committed, then the
        // source stops and anything it still delivered is read without a barrier (nothing is left to write).
        await CutAsync().ConfigureAwait(false);
        await source.StopAsync().ConfigureAwait(false);
        _channel.Writer.Complete();
        while (_channel.Reader.TryRead(out var e))
        {
            Handle(e);
        }

        ReadCut();
        Commit();
        _core.Finish(exit);
        UpdateCounters();
        return exit.Code;
    }

    private async Task<ChildExit> LoopAsync(ChildProcess child, CancellationToken ct)
    {
        var exited = child.WaitAsync(ct);
        var lastReap = Stopwatch.GetTimestamp();
        var lastEvent = 0L;
        while (!exited.IsCompleted)
        {
            while (_channel.Reader.TryRead(out var e))
            {
                Handle(e);
                lastEvent = Stopwatch.GetTimestamp();
            }

            _counters.QueueDepth = _channel.Reader.CanCount ? _channel.Reader.Count : 0;
            var now = Stopwatch.GetTimestamp();
            TimeSpan wait;
            if (_changed.Count > 0 || _core.RescanPending)
            {
                var oldest = _changed.Count > 0 ? _changed.Values.Min() : now;
                var quietFor = Stopwatch.GetElapsedTime(lastEvent, now);
                var age = Stopwatch.GetElapsedTime(oldest, now);
                if (quietFor >= _options.Debounce || age >= _options.MaxAge || _core.RescanPending)
                {
                    // Due at the first of the two moments; how late it starts shows what held this loop up.
                    var late = _core.RescanPending ? TimeSpan.Zero : TimeSpan.FromTicks(Math.Max((quietFor - _options.Debounce).Ticks, (age - _options.MaxAge).Ticks));
                    _counters.CutDelay.Observe(Math.Max(0, late.TotalSeconds));
                    await CutAsync().ConfigureAwait(false);
                    RunRetentionSteps();
                    continue;
                }

                wait = TimeSpan.FromTicks(Math.Min((_options.Debounce - quietFor).Ticks, (_options.MaxAge - age).Ticks));
            }
            else
            {
                RunRetentionSteps();
                wait = TimeSpan.FromMilliseconds(100);
            }

            if (Stopwatch.GetElapsedTime(lastReap) >= TimeSpan.FromMilliseconds(100))
            {
                _tree.ReapOrphans(child.Pid);
                lastReap = Stopwatch.GetTimestamp();
            }

            using var timeout = new CancellationTokenSource(wait < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : wait);
            var readable = _channel.Reader.WaitToReadAsync(timeout.Token).AsTask();
            // A waiting retention step wakes the loop only when it could run now (nothing of a cut pending).
            await (_retention is null || _writer.HasPending
                ? Task.WhenAny(readable, exited)
                : Task.WhenAny(readable, exited, _retention.StepQueued)).ConfigureAwait(false);
        }

        _tree.ReapOrphans(child.Pid);
        return await exited.ConfigureAwait(false);
    }

    /// <summary>Freezes the app's tree, sees every change it made, reads them, continues it, commits (see the class comment).</summary>
    private async Task CutAsync()
    {
        var started = Stopwatch.GetTimestamp();
        var stopped = _tree.Freeze(_options.FreezeTimeout);
        var frozen = _tree.FrozenCount > 0;
        TimeSpan freeze;
        try
        {
            await DrainAsync().ConfigureAwait(false);
            if (_witness is not null)
            {
                _treePids = [.. _tree.FrozenPids, .. _eventPids];
                _eventPids.Clear();
                if (_witness.Refresh(_treePids.Contains, _source.UnseenWriters ?? ulong.MaxValue) && _core.Versioner.BigFiles!.VersionsFromWrites > 0)
                {
                    _log.WriteLine("diffkeeper: the app mapped a file it opened for writing shared, or set up io_uring or AIO, whose writes no eBPF event carries: big files are read whole at every cut from now on");
                }
            }

            // Big files are copied, not hashed, while the app is stopped; they are stored once it goes on.
            _core.Versioner.DeferBigFiles = true;
            _core.RescanIfPending();
            ReadCut();
        }
        finally
        {
            _core.Versioner.DeferBigFiles = false;
            _tree.Thaw();
            freeze = Stopwatch.GetElapsedTime(started);
        }

        _witness?.ScanNewWatches(_treePids.Contains); // files first read in this cut: writers outside the app that hold them

        // The bytes are read: the app goes on while they are stored and committed.
        _core.Versioner.FinishDeferred();
        Commit();
        _counters.CountCut(frozen, freeze, !stopped);
        if (!stopped)
        {
            _log.WriteLine($"diffkeeper: the app did not stop within {_options.FreezeTimeout.TotalSeconds:0.#} s; this cut may hold a write in progress");
        }

        UpdateCounters();
    }

    /// <summary>
    /// Runs the retention steps waiting for this thread, when nothing of a cut is pending in the writer (events
    /// handled since the last cut are: their cut commits first).
    /// </summary>
    private void RunRetentionSteps()
    {
        if (_retention is null || _writer.HasPending)
        {
            return;
        }

        // A step commits on its own and holds only itself: events the core holds back wait for the cut.
        _writer.BeforeCommit = null;
        try
        {
            if (_retention.RunSteps())
            {
                WantSync();
            }
        }
        finally
        {
            _writer.BeforeCommit = _core.FlushParked;
        }

        if (_retention.TakeFinishedPass())
        {
            _storedBefore = StoreBytes(_writer.TraceDir) - _writer.StoredBytesWritten;
            UpdateCounters();
        }
    }

    /// <summary>Reads every path changed since the last cut into the store's open transaction (the caller commits).</summary>
    private void ReadCut()
    {
        _core.VersionReady(long.MaxValue);
        _core.FlushWrite();
        _reading.AddRange(_changed.Values);
        _changed.Clear();
    }

    /// <summary>
    /// Power-loss durability, off the cut path: a commit is durable against any process crash when it returns (its
    /// bytes are in the page cache), and this thread fsyncs the packs and the catalog behind it, so a disk that
    /// stalls for a second delays only this, never the next cut.
    /// </summary>
    private void SyncLoop()
    {
        while (true)
        {
            _syncWanted.Wait();
            if (_stopSyncing)
            {
                return;
            }

            var started = Stopwatch.GetTimestamp();
            _writer.SyncToDisk();
            _counters.CountDiskSync(Stopwatch.GetElapsedTime(started));
        }
    }

    private void WantSync()
    {
        try
        {
            _syncWanted.Release();
        }
        catch (SemaphoreFullException)
        {
            // a sync is already wanted: it will cover this commit too
        }
    }

    /// <summary>Commits what was read and counts how long each change waited to become durable.</summary>
    private void Commit()
    {
        _core.FlushWrite();
        _writer.Commit();
        WantSync();

        var committed = Stopwatch.GetTimestamp();
        foreach (var since in _reading)
        {
            _counters.ObserveFlushLag(Stopwatch.GetElapsedTime(since, committed).TotalSeconds);
        }

        _reading.Clear();
    }

    /// <summary>
    /// Handles every event the kernel produced before now (the app is frozen: every change it made): a source that
    /// drains to now is asked to, then the channel is read to empty; inotify gets a barrier file.
    /// </summary>
    private async Task DrainAsync()
    {
        if (!_source.DrainsToNow)
        {
            await BarrierAsync().ConfigureAwait(false);
            return;
        }

        var drained = _source.DrainToNowAsync();
        if (await Task.WhenAny(drained, Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false) != drained)
        {
            // The reader did not come round (it is stuck): what it holds is unknown, so rescan at this cut.
            _core.RequestRescan();
        }

        while (_channel.Reader.TryRead(out var e))
        {
            Handle(e);
        }
    }

    /// <summary>Consumes events until the barrier file's own event arrives: every change queued before it has been handled.</summary>
    private async Task BarrierAsync()
    {
        var name = "b" + ++_barrierSeq;
        var path = Path.Combine(_barrierDir, name);
        _awaitedBarrier = name;
        File.WriteAllBytes(path, []);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            while (_awaitedBarrier is not null)
            {
                while (_awaitedBarrier is not null && _channel.Reader.TryRead(out var e))
                {
                    Handle(e);
                }

                if (_awaitedBarrier is not null)
                {
                    await _channel.Reader.WaitToReadAsync(timeout.Token).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException)
        {
            // The barrier's event was lost (an overflow drops events): rescan everything at the next cut.
            _awaitedBarrier = null;
            _core.RequestRescan();
        }
        finally
        {
            File.Delete(path);
        }
    }

    private void Handle(in CaptureEvent e)
    {
        if (e.Root == 1)
        {
            if (e.Kind == CaptureKind.Created && e.Path == _awaitedBarrier)
            {
                _awaitedBarrier = null;
            }

            return;
        }

        if (e.Path.Length == 0 && e.Kind != CaptureKind.Overflow)
        {
            return; // the state directory itself
        }

        if (_witness is not null && e.Pid is { } pid)
        {
            _eventPids.Add(pid); // eBPF sends events of the app's tree only
        }

        _core.Handle(e);
        _counters.LostEvents = _core.Lost;
        _changed.TryAdd((e.Root, e.Path), e.Timestamp);
    }

    private void UpdateCounters()
    {
        _counters.Versions = _core.Versioner.VersionsWritten;
        _counters.VersionsFromWrites = _core.Versioner.BigFiles?.VersionsFromWrites ?? 0;
        _counters.RawBytes = _core.Versioner.RawBytes;
        _counters.StoredBytesWritten = _writer.StoredBytesWritten;
        _counters.StoredBytes = _storedBefore + _writer.StoredBytesWritten;
        _counters.QueueDepth = _channel.Reader.CanCount ? _channel.Reader.Count : 0;
    }

    private static long StoreBytes(string storeDir)
    {
        var packs = Path.Combine(storeDir, "packs");
        return Directory.Exists(packs)
            ? Directory.EnumerateFiles(packs, "*.pack", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length)
            : 0;
    }
}
