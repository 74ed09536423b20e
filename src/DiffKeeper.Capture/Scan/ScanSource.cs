using System.Threading.Channels;

namespace DiffKeeper.Capture.Scan;

/// <summary>
/// No live capture at all: the recorder's baseline scan and final reconcile scan are the whole record (one state
/// before, one after). Needs nothing; useful where no other backend works or to compare.
/// </summary>
public sealed class ScanSource : ICaptureSource
{
    public string Name => "scan";

    public bool ReportsExactNames => false;

    public bool FollowsProcessTree => false;

    /// <summary>Nothing is ever queued: drained at any moment.</summary>
    public bool DrainsToNow => true;

    public Task DrainToNowAsync() => Task.CompletedTask;

    public void Start(ChannelWriter<CaptureEvent> sink)
    {
    }

    public Task StopAsync() => Task.CompletedTask;

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
