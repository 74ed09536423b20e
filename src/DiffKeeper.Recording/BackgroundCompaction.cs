using System.Diagnostics;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Recording;

/// <summary>
/// `record`'s compaction while the command runs: a thread at nice 10 runs a maintenance pass (sweep, compaction,
/// repack; no prune) a little after the start and again while versions keep coming, reading through its own reader
/// and handing every catalog change to the recorder's thread as a short step (<see cref="QueuedWriterSteps"/>),
/// which the recorder runs between its commits (<see cref="RunSteps"/>): keep mode's arrangement, with its three
/// rules for a writer that goes on adding versions (docs/store-format.md, "Compaction, prune and garbage
/// collection"). What it leaves undone the pass after the session finishes does. A failed pass is logged once and
/// not retried: it never stops the recording.
/// With a <see cref="TraceSizeLimit"/> (<c>--max-trace-size</c>) it is also the ring: every 100 ms it measures the
/// trace, and past <see cref="TraceSizeLimit.RingStart"/> runs a pass that drops the oldest contents first
/// (<see cref="TraceSizeLimit.RingPolicy"/>), sweeps and repacks, without compaction; the writer's own check stops the
/// recording if the ring cannot keep the trace under the limit.
/// </summary>
internal sealed class BackgroundCompaction : IDisposable
{
    private static readonly TimeSpan StepBudget = TimeSpan.FromMilliseconds(5);
    private static readonly TimeSpan FirstPass = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan RingTick = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan RingStepBudget = TimeSpan.FromMilliseconds(25);
    private readonly QueuedWriterSteps _steps;
    private readonly Maintainer _maintainer;
    private readonly Func<long> _versions;
    private readonly Func<long> _superseded;
    private readonly TextWriter _log;
    private readonly PrestartedThread _thread;
    private readonly bool _compact;
    private readonly TraceSizeLimit? _limit;
    private readonly string _traceDir;
    private readonly AutoResetEvent _ringNow = new(false);
    private int _running;
    private long _roomAsked;
    private long _roomServed;

    /// <param name="superseded">Versions that replaced a chunk stored whole so far: while the writer groups small blobs
    /// as it stores them, a compaction pass runs only when it grew since the last one (new files alone give a pass
    /// nothing to do); otherwise when <paramref name="versions"/> grew (small whole blobs wait for a grouping pass).</param>
    /// <param name="thread">The thread to run on, started ahead (<see cref="PrestartedThread"/>); one is started by
    /// <see cref="Start"/> when null. It becomes this object's.</param>
    public BackgroundCompaction(TraceWriter writer, Func<long> versions, Func<long> superseded, TextWriter log, bool compact = true,
        TraceSizeLimit? limit = null, PrestartedThread? thread = null)
    {
        _superseded = writer.GroupsNow ? superseded : versions;
        _steps = new QueuedWriterSteps(writer);
        _maintainer = new Maintainer(writer, _steps);
        _versions = versions;
        _log = log;
        _compact = compact;
        _limit = limit;
        _traceDir = writer.TraceDir;
        _thread = thread ?? PrestartedThread.Start("compaction");
    }

    /// <summary>Whether a pass is running (it may hand over a step at any moment).</summary>
    public bool Running => Volatile.Read(ref _running) == 1;

    /// <summary>A pass under a size limit is running: every pass then works for the ring (it was started by it, or it must not lag behind it).</summary>
    private bool RingPass => _limit is not null && Running;

    public void Start() => _thread.Run(Loop);

    /// <summary>
    /// Recorder's thread, nothing pending in the writer: runs the waiting steps for a few milliseconds. During a ring
    /// pass it also waits up to 2 ms for each next step, for up to <see cref="RingStepBudget"/>: a pass is a dozen
    /// steps, and one step per recorder commit (every 200 ms under a steady stream of events) let a fast writer pass
    /// the limit before the ring had freed anything.
    /// </summary>
    public void RunSteps()
    {
        if (_steps.Waiting is null)
        {
            return;
        }

        var started = Stopwatch.GetTimestamp();
        var budget = RingPass ? RingStepBudget : StepBudget;
        do
        {
            _steps.RunPending(budget - Stopwatch.GetElapsedTime(started));
        }
        while (RingPass && Stopwatch.GetElapsedTime(started) < budget &&
               _steps.Queued.Wait(TimeSpan.FromMilliseconds(2)) && _steps.Waiting is not null);
    }

    /// <summary>Recorder's thread: takes no more steps and waits for the pass in progress to give up.</summary>
    public void Stop()
    {
        _thread.Dispose(); // never given its loop: it ends without one
        _steps.Close();
        if (_thread.IsAlive)
        {
            _thread.Join();
        }
    }

    /// <summary>
    /// Recorder's thread, nothing pending in the writer, the trace past <see cref="TraceSizeLimit.WaitAbove"/>:
    /// wakes the ring and runs its steps until it has measured the trace once more and made what room it could (or
    /// <paramref name="max"/> has passed). The recording's reading waits meanwhile, and the command runs on.
    /// </summary>
    public void MakeRoom(TimeSpan max)
    {
        if (_limit is null)
        {
            return;
        }

        var asked = Interlocked.Increment(ref _roomAsked);
        _ringNow.Set();
        var started = Stopwatch.GetTimestamp();
        while (Volatile.Read(ref _roomServed) < asked && !_steps.Stopping.IsCancellationRequested &&
               Stopwatch.GetElapsedTime(started) < max)
        {
            _steps.RunPending(RingStepBudget);
            _steps.Queued.Wait(TimeSpan.FromMilliseconds(2));
        }

        _limit.Remeasure();
    }

    private void Loop()
    {
        try
        {
            Passes();
        }
        finally
        {
            Volatile.Write(ref _roomServed, long.MaxValue); // no ring any more: nobody waits for it
        }
    }

    private void Passes()
    {
        if (_limit is null)
        {
            // Under a size limit the ring must keep pace with the command's writes, or the recording stops storing:
            // the thread keeps the recorder's priority (its compaction passes too, since a thread cannot raise it back).
            _ = Native.Interop.Libc.SetPriority(Native.Interop.Libc.PRIO_PROCESS, (uint)Native.Interop.Libc.Gettid(), 10);
        }

        var passedAt = 0L; // no pass before anything was written (or, with groups, superseded)
        var ringIdleAt = -1L;
        var compactAt = Stopwatch.GetTimestamp() + (long)(FirstPass.TotalSeconds * Stopwatch.Frequency);
        WaitHandle[] wakes = [_steps.Stopping.WaitHandle, _ringNow];
        while (WaitHandle.WaitAny(wakes, _limit is null ? FirstPass : RingTick) != 0)
        {
            var serving = Volatile.Read(ref _roomAsked); // what the ring measures from here on answers these asks
            try
            {
                var versions = _versions();
                MaintenanceOptions options;
                if (_limit is not null && (versions != ringIdleAt || _maintainer.PackFilesLeft > 0) &&
                    _limit.RingPolicy(TraceSizeLimit.Measure(_traceDir)) is { } ring)
                {
                    // Pack files a reader kept the last pass from deleting are part of the size: deleting them comes
                    // before dropping anything more.
                    options = new MaintenanceOptions(Delta: null, Prune: _maintainer.PackFilesLeft > 0 ? null : ring) { RowsPerStep = 256, RepackBudget = 0 };
                }
                else if (_compact && Stopwatch.GetTimestamp() >= compactAt && _superseded() is var superseded && superseded != passedAt)
                {
                    passedAt = superseded; // a pass when something is new since the last one
                    compactAt = Stopwatch.GetTimestamp() + (long)(Interval.TotalSeconds * Stopwatch.Frequency);
                    // No repack beyond the threshold's while the command runs: the pass after the session tidies.
                    options = new MaintenanceOptions { RowsPerStep = 256, RepackBudget = 0 };
                }
                else
                {
                    continue;
                }

                Volatile.Write(ref _running, 1);
                try
                {
                    var done = _maintainer.Run(options, DateTimeOffset.UtcNow);
                    if (options.Prune is not null && done.VersionsPruned == 0)
                    {
                        ringIdleAt = versions; // nothing older left to drop: wait for new versions
                    }
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    _log.WriteLine($"diffkeeper: compaction during the recording failed, it runs again after the command: {e.Message}");
                    return;
                }
                finally
                {
                    Volatile.Write(ref _running, 0);
                }
            }
            finally
            {
                Volatile.Write(ref _roomServed, serving);
            }
        }
    }

    public void Dispose()
    {
        Stop();
        _maintainer.Dispose();
        _steps.Dispose();
        _ringNow.Dispose();
    }
}
