using System.Threading.Channels;
using DiffKeeper.Capture;

namespace DiffKeeper.Recording;

/// <summary>
/// The capture source's end of the recorder's channel: forwards every event and wakes the recorder's consumer
/// thread, which waits in <see cref="Wait"/>. The consumer thus blocks on a plain event with a timeout instead of
/// awaiting the channel with a timed cancellation token: no timer thread, no thread-pool hops between batches
/// (each thread a NativeAOT process starts costs its starter a spin of sched_yield until the thread runs).
/// Never blocks the writer.
/// </summary>
internal sealed class WakingChannelWriter(ChannelWriter<CaptureEvent> inner) : ChannelWriter<CaptureEvent>, IDisposable
{
    // No spinning before blocking: the consumer shares two cores with the recorded command.
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 0);

    public override bool TryWrite(CaptureEvent item)
    {
        if (!inner.TryWrite(item))
        {
            return false;
        }

        if (!_wake.IsSet)
        {
            _wake.Set();
        }

        return true;
    }

    public override ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken = default) =>
        inner.WaitToWriteAsync(cancellationToken);

    public override bool TryComplete(Exception? error = null)
    {
        var completed = inner.TryComplete(error);
        _wake.Set();
        return completed;
    }

    /// <summary>Forgets earlier wake-ups; call before draining the channel, so a write after the drain still wakes <see cref="Wait"/>.</summary>
    public void Reset() => _wake.Reset();

    /// <summary>Waits until something was written or the channel completed since <see cref="Reset"/>, or the timeout passed.</summary>
    public void Wait(TimeSpan timeout) => _wake.Wait(timeout);

    public void Dispose() => _wake.Dispose();
}
