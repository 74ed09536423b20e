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
/// </summary>
internal sealed class BackgroundCompaction : IDisposable
{
    private static readonly TimeSpan StepBudget = TimeSpan.FromMilliseconds(5);
    private static readonly TimeSpan FirstPass = TimeSpan.FromMilliseconds(500);
    private static readonly TimeSpan Interval = TimeSpan.FromSeconds(10);
    private readonly QueuedWriterSteps _steps;
    private readonly Maintainer _maintainer;
    private readonly Func<long> _versions;
    private readonly TextWriter _log;
    private readonly Thread _thread;
    private int _running;

    public BackgroundCompaction(TraceWriter writer, Func<long> versions, TextWriter log)
    {
        _steps = new QueuedWriterSteps(writer);
        _maintainer = new Maintainer(writer, _steps);
        _versions = versions;
        _log = log;
        _thread = new Thread(Loop) { IsBackground = true, Name = "compaction" };
    }

    /// <summary>Whether a pass is running (it may hand over a step at any moment).</summary>
    public bool Running => Volatile.Read(ref _running) == 1;

    public void Start() => _thread.Start();

    /// <summary>Recorder's thread, nothing pending in the writer: runs the waiting steps for a few milliseconds.</summary>
    public void RunSteps()
    {
        if (_steps.Waiting is not null)
        {
            _steps.RunPending(StepBudget);
        }
    }

    /// <summary>Recorder's thread: takes no more steps and waits for the pass in progress to give up.</summary>
    public void Stop() => _steps.CloseAndJoin(_thread);

    private void Loop()
    {
        _ = Native.Interop.Libc.SetPriority(Native.Interop.Libc.PRIO_PROCESS, (uint)Native.Interop.Libc.Gettid(), 10);
        var wait = FirstPass;
        var passedAt = -1L;
        while (!_steps.Stopping.WaitHandle.WaitOne(wait))
        {
            wait = Interval;
            var versions = _versions();
            if (versions == passedAt)
            {
                continue; // nothing new since the last pass
            }

            passedAt = versions;
            Volatile.Write(ref _running, 1);
            try
            {
                _maintainer.Run(new MaintenanceOptions { RowsPerStep = 256 }, DateTimeOffset.UtcNow);
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
    }

    public void Dispose()
    {
        Stop();
        _maintainer.Dispose();
        _steps.Dispose();
    }
}
