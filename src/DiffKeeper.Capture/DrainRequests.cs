namespace DiffKeeper.Capture;

/// <summary>
/// "Drain to now" requests to a source's reader thread (<see cref="ICaptureSource.DrainToNowAsync"/>). A request
/// is a generation number; the reader notes the newest generation before a read pass and, when a pass that began
/// after that found the kernel's queue empty, completes every request up to it: all the kernel produced before
/// those requests is then in the sink.
/// </summary>
public sealed class DrainRequests
{
    private readonly Lock _lock = new();
    private readonly List<(long Generation, TaskCompletionSource Done)> _waiting = [];
    private long _requested;
    private long _completed;

    /// <summary>The newest generation requested: read by the reader before its read pass.</summary>
    public long Requested => Volatile.Read(ref _requested);

    /// <summary>Whether a request waits (the reader then skips its idle wait).</summary>
    public bool Pending => Volatile.Read(ref _requested) != Volatile.Read(ref _completed);

    /// <summary>A task completed once a read pass begun after this call found the queue empty; <paramref name="wake"/> rouses the reader.</summary>
    public Task Request(Action? wake = null)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lock (_lock)
        {
            _waiting.Add((++_requested, done));
        }

        wake?.Invoke();
        return done.Task;
    }

    /// <summary>The reader's pass that began after it read <paramref name="generation"/> found the queue empty.</summary>
    public void Complete(long generation)
    {
        lock (_lock)
        {
            if (generation <= _completed)
            {
                return;
            }

            _completed = generation;
            for (var i = _waiting.Count - 1; i >= 0; i--)
            {
                if (_waiting[i].Generation <= generation)
                {
                    _waiting[i].Done.TrySetResult();
                    _waiting.RemoveAt(i);
                }
            }
        }
    }

    /// <summary>The reader stopped: nothing more will come, so every request is as drained as it will be.</summary>
    public void CompleteAll()
    {
        lock (_lock)
        {
            _completed = _requested;
            foreach (var (_, done) in _waiting)
            {
                done.TrySetResult();
            }

            _waiting.Clear();
        }
    }
}
