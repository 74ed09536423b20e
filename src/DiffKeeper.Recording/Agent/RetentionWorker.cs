using System.Diagnostics;
using System.Globalization;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// Keep mode's retention: a background thread that runs a maintenance pass (prune by the policy, sweep,
/// compaction, repack, deletion of freed pack files) every interval while the agent goes on recording. The pass
/// reads the store through its own reader and hands every catalog change to the agent's thread as a short step
/// (<see cref="QueuedWriterSteps"/>), which the agent runs between its cuts (<see cref="RunSteps"/>) while nothing
/// of its own is pending: capture never waits for a whole pass, only, at worst, for one step; every commit still
/// leaves the store's latest state a consistent cut (a step never changes the newest version of a path).
/// </summary>
public sealed class RetentionWorker : IDisposable
{
    private static readonly TimeSpan StepBudget = TimeSpan.FromMilliseconds(5);
    private readonly RetentionOptions _options;
    private readonly MaintenanceOptions _maintenance;
    private readonly AgentCounters _counters;
    private readonly TextWriter _log;
    private readonly QueuedWriterSteps _steps;
    private readonly Maintainer _maintainer;
    private readonly Thread _thread;
    private int _passFinished;

    /// <summary>Rows one step changes at most: the agent's next cut waits for the step it is running.</summary>
    private const int RowsPerStep = 256;

    public RetentionWorker(RetentionOptions options, TraceWriter writer, AgentCounters counters, TextWriter log)
    {
        _options = options;
        _counters = counters;
        _log = log;
        _maintenance = new MaintenanceOptions(BlobCodec.ZstdDelta, Prune: new PrunePolicy(options.MaxVersions, (long?)options.Retain?.TotalNanoseconds, BothLimit: true))
        {
            RowsPerStep = RowsPerStep,
            RepackBudget = 0, // beside the app's cuts: the threshold's repacks only (RepackRule)
        };
        _steps = new QueuedWriterSteps(writer);
        _maintainer = new Maintainer(writer, _steps);
        _thread = new Thread(Loop) { IsBackground = true, Name = "retention" };
    }

    /// <summary>Completes when a step waits for the agent's thread.</summary>
    public Task StepQueued => _steps.Queued;

    public void Start() => _thread.Start();

    /// <summary>
    /// Agent's thread, with nothing pending in the writer: runs the waiting steps (for up to a few milliseconds;
    /// at least one). Returns whether any ran (each committed: the caller has the store fsynced behind them).
    /// </summary>
    public bool RunSteps()
    {
        var (steps, elapsed, longest) = _steps.RunPending(StepBudget);
        if (steps > 0)
        {
            _counters.CountGcSteps(steps, elapsed, longest);
        }

        return steps > 0;
    }

    /// <summary>Agent's thread: whether a pass finished since the last call (the store's size changed).</summary>
    public bool TakeFinishedPass() => Interlocked.Exchange(ref _passFinished, 0) == 1;

    /// <summary>Agent's thread: takes no more steps and waits for the pass in progress to give up (at the next step or row).</summary>
    public void Stop() => _steps.CloseAndJoin(_thread);

    private void Loop()
    {
        // Nice 10 for this thread only: on a busy machine the agent's thread (cuts) and the app come first, and a
        // pass takes longer instead. Failing to lower it changes nothing else.
        _ = Native.Interop.Libc.SetPriority(Native.Interop.Libc.PRIO_PROCESS, (uint)Native.Interop.Libc.Gettid(), 10);
        var lastVersions = -1L;
        var settled = false;
        while (!_steps.Stopping.WaitHandle.WaitOne(_options.Interval))
        {
            // A pass that changed nothing, with no version added since and no pack file left to delete, is followed
            // only by passes that change nothing, unless time expires versions (--retain).
            var versions = _counters.Versions;
            if (settled && versions == lastVersions && _options.Retain is null && _maintainer.PackFilesLeft == 0)
            {
                continue;
            }

            lastVersions = versions;
            settled = false;
            _counters.GcRunning = true;
            var started = Stopwatch.GetTimestamp();
            try
            {
                var r = _maintainer.Run(_maintenance, DateTimeOffset.UtcNow);
                _counters.CountGcRun(r.VersionsPruned, r.BlobsSwept, r.PackBytesBefore - r.PackBytesAfter);
                settled = r.VersionsPruned == 0 && r.BlobsSwept == 0 && (r.Compaction?.Encoded ?? 0) == 0 && (r.Grouping?.Members ?? 0) == 0 &&
                          r.Collection.PacksRepacked + r.Collection.PacksDropped == 0;
                if (r.VersionsPruned > 0 || r.BlobsSwept > 0 || r.Collection.PacksRepacked + r.Collection.PacksDropped > 0)
                {
                    _log.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"diffkeeper: retention: {r.VersionsPruned} versions pruned, {r.BlobsSwept} blobs swept, {r.Compaction?.Encoded ?? 0} re-encoded as deltas, " +
                        $"{r.Collection.PacksRepacked + r.Collection.PacksDropped} packs freed; packs {r.PackBytesBefore} -> {r.PackBytesAfter} bytes in {Stopwatch.GetElapsedTime(started).TotalMilliseconds:0} ms"));
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // Retention must never stop the recording: the store is valid after every step, so the next pass
                // simply starts over.
                _counters.CountGcFailure();
                _log.WriteLine($"diffkeeper: retention pass failed, the next one retries in {_options.Interval.TotalSeconds:0.###} s: {e.Message}");
            }
            finally
            {
                _counters.GcRunning = false;
                Volatile.Write(ref _passFinished, 1);
            }
        }
    }

    public void Dispose()
    {
        Stop();
        _maintainer.Dispose();
        _steps.Dispose();
    }
}
