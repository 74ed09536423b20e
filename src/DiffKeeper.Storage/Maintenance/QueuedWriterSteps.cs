using System.Diagnostics;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// Steps handed from a maintenance thread to the thread that owns the writer (keep mode's agent): the
/// maintenance thread blocks in <see cref="Run{T}"/> until the owner has run the step in
/// <see cref="RunPending"/>, which it calls between its own commits. The owner decides when, so its own
/// transactions are never mixed with a step's, and a step delays the owner's next commit by its own duration only.
/// Thread-safe.
/// </summary>
public sealed class QueuedWriterSteps : IWriterSteps, IDisposable
{
    private readonly TraceWriter _writer;
    private readonly Queue<Pending> _queue = new();
    private readonly Lock _lock = new();
    private readonly CancellationTokenSource _stopping = new();
    private TaskCompletionSource _queued = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private bool _closed;

    public QueuedWriterSteps(TraceWriter writer) => _writer = writer;

    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Completes when a step is waiting (at once if one is).</summary>
    public Task Queued
    {
        get
        {
            lock (_lock)
            {
                return _queue.Count > 0 || _closed ? Task.CompletedTask : _queued.Task;
            }
        }
    }

    /// <summary>The name of the step waiting to run ("prune", "sweep", "compact", "repack", ...), or null.</summary>
    public string? Waiting
    {
        get
        {
            lock (_lock)
            {
                return _queue.TryPeek(out var next) ? next.Name : null;
            }
        }
    }

    public T Run<T>(string name, Func<TraceWriter, T> step)
    {
        T result = default!;
        var pending = new Pending(name, w => result = step(w));
        lock (_lock)
        {
            if (_closed)
            {
                throw new OperationCanceledException("the writer's owner stopped taking maintenance steps", _stopping.Token);
            }

            _queue.Enqueue(pending);
            _queued.TrySetResult();
            _queued = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        pending.Done.Wait();
        return pending.Error switch
        {
            null => result,
            OperationCanceledException => throw new OperationCanceledException("the writer's owner stopped taking maintenance steps", _stopping.Token),
            var e => throw new MaintenanceStepException(name, e),
        };
    }

    /// <summary>
    /// Owner's thread, with nothing pending in the writer: runs waiting steps, one after another, until none is
    /// waiting or <paramref name="budget"/> has passed (at least one runs). Returns how many ran and how long they took.
    /// </summary>
    public (int Steps, TimeSpan Elapsed, TimeSpan Longest) RunPending(TimeSpan budget)
    {
        var started = Stopwatch.GetTimestamp();
        var count = 0;
        var longest = TimeSpan.Zero;
        while (Stopwatch.GetElapsedTime(started) < budget || count == 0)
        {
            Pending? next;
            lock (_lock)
            {
                if (!_queue.TryDequeue(out next))
                {
                    break;
                }
            }

            var stepStarted = Stopwatch.GetTimestamp();
            try
            {
                next.Action(_writer);
            }
            catch (Exception e)
            {
                _writer.Rollback();
                next.Error = e;
            }

            var took = Stopwatch.GetElapsedTime(stepStarted);
            longest = took > longest ? took : longest;
            count++;
            next.Done.Set();
        }

        return (count, Stopwatch.GetElapsedTime(started), longest);
    }

    /// <summary>Owner's thread: takes no more steps; the waiting and later ones throw <see cref="OperationCanceledException"/>.</summary>
    public void Close()
    {
        List<Pending> abandoned;
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            abandoned = [.. _queue];
            _queue.Clear();
            _queued.TrySetResult();
        }

        _stopping.Cancel();
        foreach (var p in abandoned)
        {
            p.Error = new OperationCanceledException("the writer's owner stopped taking maintenance steps", _stopping.Token);
            p.Done.Set();
        }
    }

    /// <summary>
    /// Owner's thread: <see cref="Close"/>, then waits for <paramref name="maintenance"/>, the thread that hands over
    /// the steps, to give up (at its next step or row). Safe to call more than once.
    /// </summary>
    public void CloseAndJoin(Thread maintenance)
    {
        Close();
        if (maintenance.IsAlive)
        {
            maintenance.Join();
        }
    }

    public void Dispose()
    {
        Close();
        _stopping.Dispose();
    }

    private sealed class Pending(string name, Action<TraceWriter> action)
    {
        public string Name { get; } = name;

        public Action<TraceWriter> Action { get; } = action;

        public ManualResetEventSlim Done { get; } = new();

        public Exception? Error { get; set; }
    }
}

/// <summary>A maintenance step failed on the writer's thread; <see cref="Exception.InnerException"/> says how.</summary>
public sealed class MaintenanceStepException(string step, Exception inner) : Exception($"maintenance step '{step}' failed: {inner.Message}", inner);
