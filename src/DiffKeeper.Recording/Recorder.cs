using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Recording;

/// <summary>
/// One `record` session: baseline scan, the command, events turned into timeline entries and versions (by the
/// <see cref="RecordingCore"/> `run` shares), the final reconcile scan and the EXIT event. Capture runs on its own
/// thread and never waits for the recorder; this class consumes its channel on one thread, has the core read changed
/// files as they come due (after a short debounce, longer for hot files) and commits the catalog at least every
/// <see cref="RecordOptions.CommitInterval"/> while work is pending; a failed write of the store ends the recording,
/// never the command.
/// </summary>
public sealed class Recorder
{
    private readonly RecordOptions _options;
    private readonly TextWriter _log;
    private TraceWriter _writer = null!;
    private RecordingCore _core = null!;
    private long _versionsBefore;

    public Recorder(RecordOptions options, TextWriter log)
    {
        _options = options;
        _log = log;
    }

    public async Task<RecordResult> RunAsync(CancellationToken ct)
    {
        // The threads the session starts once its baseline is taken are started now, on a pool thread beside the
        // trace's opening and the capture's start: each start made this thread spin until the new thread ran (1-5 ms a
        // thread at load 2-10), three of them between the baseline and the command.
        var standby = Task.Run(() => new StandbyThreads(_options.Compact || _options.MaxTraceSize is not null));
        try
        {
            return await RunAsync(standby, ct).ConfigureAwait(false);
        }
        finally
        {
            // Those not handed work end. A failure to start them is not thrown from here: it would hide the error the
            // run ended with (a locked trace, an unwritable catalog), and the run itself awaits the threads.
            await ((Task)standby).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (standby.IsCompletedSuccessfully)
            {
                standby.Result.Dispose();
            }
        }
    }

    private async Task<RecordResult> RunAsync(Task<StandbyThreads> standby, CancellationToken ct)
    {
        var filter = new PathFilter(_options.Roots, Path.GetFullPath(_options.TraceDir), _options.Excludes); // the writer's TraceDir
        var channel = new EventQueue(); // segments reused: an unbounded Channel allocated ~19 MB of them anew in 20,000 creates
        using var sink = new WakingChannelWriter(channel.Writer);
        // The capture backend starts (eBPF: ~0.1 s of BTF, verification and maps) while the trace opens on this thread
        // (a new catalog: ~10 ms). Nothing is read from it before the baseline, which comes after both as before.
        var starting = Task.Run(() => CaptureSelection.Start(_options, filter, sink, _log));
        TraceWriter opened;
        try
        {
            opened = TraceWriter.Open(_options.TraceDir);
        }
        catch
        {
            // The trace's error is the one to report (locked, unwritable): the backend is stopped, whatever it did.
            await StopStarted(starting).ConfigureAwait(false);
            throw;
        }

        using var writer = opened;
        _writer = writer;
        await using var source = await starting.ConfigureAwait(false);
        if (_options.MaxTraceSize is { } max)
        {
            writer.SizeLimit = new TraceSizeLimit(writer.TraceDir, max);
            StoreMaintenance.MakeRoom(writer, writer.SizeLimit, DateTimeOffset.UtcNow);
        }

        _core = new RecordingCore(writer, source, _options.Roots, filter, _options.Debounce, _options.HotWindow, _log);
        using var stored = new StoredContent(writer.TraceDir) { HoldReader = writer.SizeLimit is null };
        _core.Begin(string.Join(' ', _options.Command.Select(Quote)), _options.Cwd, RecordingCore.WallNs(), _options.BigFileThreshold, stored);
        // eBPF: big files' versions read only the blocks the tree's writes touched while the witness vouches for them.
        using var witness = LiveWriteWitness.TryStart(source, _core.Versioner.BigFiles!, _log);
        _witness = witness;
        try
        {
            _core.Baseline(commit: true);
        }
        catch (Exception e) when (IsStorageFailure(e))
        {
            _core.Versioner.UseAllCores = false;
            StorageFailed(e);
        }

        // The baseline's versions may replace what the last session left (files changed since): they are read by the
        // pass's check after the session; the recorder counts what the session's own versions replace.
        _versionsBefore = writer.LastVersionId;
        var threads = await standby.ConfigureAwait(false);
        try
        {
            _core.Start();
        }
        catch (Exception e) when (IsStorageFailure(e))
        {
            StorageFailed(e);
        }

        witness?.Scan(); // big files of the baseline: outside holders, looked for before the command starts

        if ((_options.Compact || writer.SizeLimit is not null) && _storageFailure is null)
        {
            _background = new BackgroundCompaction(writer, () => _core.Versioner.VersionsWritten, () => _core.Versioner.ContentsSuperseded,
                _log, _options.Compact, writer.SizeLimit, threads.Compaction);
            _background.Start();
        }

        ChildExit exit;
        // The consumer has a thread of its own and blocks between batches (WakingChannelWriter): as an async loop
        // it hopped between thread-pool workers and needed the timer thread for its timed waits.
        var consumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        threads.Recorder.Run(() =>
        {
            try
            {
                if (_storageFailure is null)
                {
                    Consume(channel.Reader, sink);
                }
                else
                {
                    Drain(channel.Reader, sink);
                }

                consumed.SetResult();
            }
            catch (Exception e) when (IsStorageFailure(e))
            {
                // The disk is full (or failing): the command runs on; what it changes from now on is dropped here,
                // so capture neither blocks it nor piles up in memory, and the session is closed after it exits.
                StorageFailed(e);
                Drain(channel.Reader, sink);
                consumed.SetResult();
            }
            catch (Exception e)
            {
                consumed.SetException(e); // rethrown where RunAsync awaits it
            }
        });
        try
        {
            using var child = ChildProcess.Start(_options.Command, _options.Cwd, threads.CommandWait);
            exit = await child.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (DiffKeeperException e) when (e.Code is ExitCode.CommandNotFound or ExitCode.CannotExecute)
        {
            _log.WriteLine($"diffkeeper: {e.Message}");
            exit = ChildExit.Exited((int)e.Code);
        }

        var exitCode = exit.Code;

        // The command is gone: what is left to read may use every core (the consumer reads this per file), and the
        // reconcile scan's walk runs now, beside the recorder's catching up, instead of after it.
        _core.Versioner.UseAllCores = true;
        var walk = _storageFailure is null ? Task.Run(_core.WalkRoots) : null;
        await source.StopAsync().ConfigureAwait(false);
        sink.Complete();
        try
        {
            await consumed.Task.ConfigureAwait(false);
        }
        finally
        {
            _background?.Dispose(); // the consumer took its last step; the pass after the session does the rest
        }

        if (_storageFailure is { } failure)
        {
            CloseAfterStorageFailure(failure, exit);
            return Result(exitCode);
        }

        try
        {
            // The last version of a big file read from its written blocks must be exact: after the last refresh, any
            // the witness no longer vouches for is read whole by the reconcile scan.
            witness?.Finish(_core);
            _core.Rescan("reconcile", walk is null ? null : await WalkedOrNull(walk).ConfigureAwait(false));
            _core.FlushWrite();
            stored.Dispose(); // its readers' lock would keep any later collection from deleting packs
            _core.Finish(exit);
        }
        catch (Exception e) when (IsStorageFailure(e))
        {
            // A write failed after the command ended (the reconcile scan, EXIT, the session's end): as during it.
            StorageFailed(e);
            CloseAfterStorageFailure(e, exit);
            return Result(exitCode);
        }

        stored.Dispose(); // its reader holds LOCK.readers: compaction could not delete the packs it empties
        return Compact(Result(exitCode));
    }

    /// <summary>The session's threads, started ahead (<see cref="PrestartedThread"/>); disposing ends those not handed work.</summary>
    private sealed class StandbyThreads : IDisposable
    {
        public StandbyThreads(bool compaction)
        {
            try
            {
                Recorder = PrestartedThread.Start("recorder");
                Compaction = compaction ? PrestartedThread.Start("compaction") : null;
                CommandWait = PrestartedThread.Start("command wait");
            }
            catch
            {
                Recorder?.Dispose(); // the ones started end, not left waiting for work in a long-lived host
                Compaction?.Dispose();
                throw;
            }

            // The runtime sets up its signal handling (a pipe, a thread and its handlers, 1-2 ms) at the first
            // registration, which was the command's own (ChildProcess). Until that one, SIGINT and SIGTERM still end
            // diffkeeper as before: the runtime's handler re-raises a signal nobody registered for. SIGWINCH's
            // default is to be ignored, with or without the registration.
            PosixSignalRegistration.Create(PosixSignal.SIGWINCH, static _ => { }).Dispose();
        }

        public PrestartedThread Recorder { get; }

        public PrestartedThread? Compaction { get; }

        public PrestartedThread CommandWait { get; }

        public void Dispose()
        {
            Recorder.Dispose();
            Compaction?.Dispose();
            CommandWait.Dispose();
        }
    }

    private static async Task StopStarted(Task<ICaptureSource> starting)
    {
        try
        {
            await (await starting.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // It failed to start as well: the trace's error is reported.
        }
    }

    /// <summary>
    /// After the session finished: compaction and garbage collection of the whole trace (what `gc` does), on the
    /// calling thread at the recorder's priority (the command is gone and the caller waits for `record`: at nice 10 a
    /// loaded machine starved it, and a 300,000-write session took 100 s to end beside load 29, against 6 s without the
    /// pass; a thread of its own, kept from then, cost a W1 `record` a fresh stack, malloc arena and zstd context),
    /// under the writer's lock this recording already holds. Every step commits before the next,
    /// so a kill at any moment leaves a trace that verifies and exports every moment; a failure is logged and leaves
    /// the recording as it is (`gc` retries).
    /// </summary>
    private RecordResult Compact(RecordResult result)
    {
        // --max-trace-size: the ring drops the oldest contents first when the trace is past half its limit.
        var ring = _writer.SizeLimit?.RingPolicy(TraceSizeLimit.Measure(_writer.TraceDir));
        if (!_options.Compact && ring is null)
        {
            return result;
        }

        // Nothing superseded since the last finished pass and nothing left to sweep: a pass would only read the
        // catalog (~30 page faults and a few ms of `record -- true` on a one-file trace, a walk of every path of a big one).
        if (ring is null && !_writer.HasMaintenanceWork(_core.Versioner.ContentsSuperseded == 0 ? _versionsBefore : null))
        {
            return result;
        }

        _writer.BeforeCommit = null; // the session is closed: nothing of it is held any more

        MaintenanceResult done;
        try
        {
            done = StoreMaintenance.Run(_writer, _options.Compact ? new MaintenanceOptions(Prune: ring) : new MaintenanceOptions(Delta: null, Prune: ring), DateTimeOffset.UtcNow);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _log.WriteLine($"diffkeeper: compaction failed, the recording is complete as it is ('diffkeeper gc' retries): {e.Message}");
            return result;
        }

        // With --no-compact only the size ring ran: the summary's compaction fields stay null, as documented.
        return _options.Compact ? result with { PackBytesBefore = done.PackBytesBefore, PackBytesAfter = done.PackBytesAfter } : result;
    }

    private Exception? _storageFailure;
    private BackgroundCompaction? _background;
    private LiveWriteWitness? _witness;

    /// <summary>
    /// The first failed write of the store: says so once, and gives up the uncommitted changes at once (cutting
    /// their pack bytes back, so the disk is not left full while the command runs on).
    /// </summary>
    private void StorageFailed(Exception e)
    {
        if (_storageFailure is not null)
        {
            return;
        }

        _storageFailure = e;
        _log.WriteLine($"diffkeeper: cannot store more of this recording: {StorageFailureReason(e)}; the command runs on, and its changes from now on are not recorded");
        try
        {
            _core.Abandon();
        }
        catch (Exception x) when (IsStorageFailure(x))
        {
            // closing the session after the command says whether the trace could be written at all
        }
    }

    // The walk taken when the command exited, or null when it failed: the reconcile scan then walks again, and an
    // error surfaces there as it always did.
    private static async Task<List<(int Root, string Rel, EntryStat Stat)>?> WalkedOrNull(Task<List<(int Root, string Rel, EntryStat Stat)>> walk)
    {
        try
        {
            return await walk.ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return null;
        }
    }

    private static bool IsStorageFailure(Exception e) =>
        e is IOException or Storage.Catalog.CatalogException or UnauthorizedAccessException ||
        e is DiffKeeperException { Code: ExitCode.SystemError };

    private static string StorageFailureReason(Exception e) => e switch
    {
        Storage.Catalog.CatalogException { ErrorCode: 13 } => "no space left on the device (the catalog is full)",
        Storage.Catalog.CatalogException c => $"the catalog failed ({c.Message})",
        DiffKeeperException { InnerException: { } inner } when OsError.IsOsFailure(inner) => OsError.Reason(inner),
        DiffKeeperException d => d.Message,
        _ => OsError.Reason(e),
    };

    private static void Drain(ChannelReader<CaptureEvent> reader, WakingChannelWriter wake)
    {
        while (true)
        {
            wake.Reset();
            while (reader.TryRead(out _))
            {
            }

            if (reader.Completion.IsCompleted)
            {
                return;
            }

            wake.Wait(TimeSpan.FromMilliseconds(200));
        }
    }

    /// <summary>
    /// After a failed write: gives up the uncommitted changes (their pack bytes are cut back, freeing the space),
    /// then closes the session with a LOST event saying what was not stored and the EXIT event. If even that cannot
    /// be written, the session stays open and the next writer marks it interrupted.
    /// </summary>
    private void CloseAfterStorageFailure(Exception failure, ChildExit exit)
    {
        try
        {
            _core.CloseAfterFailure(StorageFailureReason(failure), exit);
        }
        catch (Exception e) when (IsStorageFailure(e))
        {
            _log.WriteLine($"diffkeeper: the session could not be closed either ({StorageFailureReason(e)}); the trace keeps what was committed before, and the next recording marks this session interrupted");
        }
    }

    private RecordResult Result(int exitCode) =>
        new(_core.SessionId, exitCode, _core.Events, _core.Versioner.VersionsWritten, _core.Lost, _core.Versioner.RawBytes, _writer.StoredBytesWritten)
        {
            BigFileBytesRead = _core.Versioner.BigFiles?.BytesRead ?? 0,
            BigFileVersionsFromWrites = _core.Versioner.BigFiles?.VersionsFromWrites ?? 0,
        };

    private void Consume(ChannelReader<CaptureEvent> reader, WakingChannelWriter wake)
    {
        var lastCommit = Stopwatch.GetTimestamp();
        var completed = false;
        var roomAt = -1L;
        Action? runSteps = _background is { } b ? b.RunSteps : null; // one delegate, not one per turn of the loop
        void Commit()
        {
            _core.FlushWrite();
            _writer.Commit();
            lastCommit = Stopwatch.GetTimestamp();
            _witness?.AfterCommit();
            _core.AfterCommit();
        }

        while (true)
        {
            wake.Reset();
            if (_background is { } ring && _writer.SizeLimit is { } limit && _core.Versioner.VersionsWritten != roomAt &&
                limit.Current() > limit.WaitAbove)
            {
                // Near the size limit: what is read next waits until the ring has made room, or the ring could fall
                // behind a fast writer on a loaded machine and the limit stop the recording with older contents left.
                roomAt = _core.Versioner.VersionsWritten;
                if (_writer.HasPending)
                {
                    Commit();
                }

                BetweenCommits(() => ring.MakeRoom(TimeSpan.FromSeconds(10)));
            }

            // A backlog is handled in turns of at most 8,192 events, and a turn also ends when a commit is due: an untar's
            // turn took 0.3-0.7 s at a load of 13, so its recording committed 5 times in 4 s, and the copies the
            // commit lets go of (RecordingCore.AfterCommit) piled up as new memory in between.
            var processed = 0;
            var drained = false;
            while (processed < 8192)
            {
                if ((processed & 255) == 255 && Stopwatch.GetElapsedTime(lastCommit) >= _options.CommitInterval)
                {
                    break;
                }

                if (!reader.TryRead(out var e))
                {
                    drained = true;
                    break;
                }

                _witness?.Saw(e);
                _core.Handle(e);
                processed++;
            }

            if (drained)
            {
                _core.RescanIfPending();
            }

            if (!completed && reader.Completion.IsCompleted)
            {
                completed = true;
            }

            var now = Stopwatch.GetTimestamp();
            _core.VersionReady(completed ? long.MaxValue : now);
            var idle = processed == 0 && !_core.HasDirty;
            if (_writer.HasPending && (idle || completed || Stopwatch.GetElapsedTime(lastCommit) >= _options.CommitInterval))
            {
                Commit();
            }

            if (runSteps is not null && !_writer.HasPending)
            {
                BetweenCommits(runSteps);
            }

            if (completed && !_core.HasDirty && !reader.TryPeek(out _))
            {
                return;
            }

            if (processed == 0)
            {
                var wait = !_core.HasDirty ? TimeSpan.FromMilliseconds(200) : Stopwatch.GetElapsedTime(now, _core.NextReadyAt);
                wait = wait < TimeSpan.FromMilliseconds(1) ? TimeSpan.FromMilliseconds(1) : wait;
                // A running compaction pass hands over steps: they wait at most this long for the recorder.
                wait = _background?.Running == true && wait > TimeSpan.FromMilliseconds(10) ? TimeSpan.FromMilliseconds(10) : wait;
                wake.Wait(wait);
            }
        }
    }

    /// <summary>
    /// Runs background maintenance steps between the recording's commits. Each step commits on its own and holds
    /// only itself: held events wait for the recording's next commit (a step that fails is rolled back and must not
    /// take them along).
    /// </summary>
    private void BetweenCommits(Action steps)
    {
        _writer.BeforeCommit = null;
        try
        {
            steps();
        }
        finally
        {
            _writer.BeforeCommit = _core.FlushParked;
        }
    }

    private static string Quote(string arg)
    {
        // An argument that is not UTF-8 (its bytes escaped by PathBytes) is shown as a path is: \xHH for those bytes.
        if (arg.Any(c => c is >= '\uDC80' and <= '\uDCFF'))
        {
            arg = PathBytes.Display(arg);
        }

        return arg.Length > 0 && arg.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,@%+".Contains(c)) ? arg : "'" + arg.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }
}
