using System.Runtime;

namespace DiffKeeper.Cli;

/// <summary>
/// No garbage collection while a short command allocates up to a given number of bytes
/// (<see cref="GC.TryStartNoGCRegion(long, long)"/>): a command whose objects live until it ends gains nothing from a
/// collection, which only copies them into fresh pages. When the command allocates more, the runtime ends the pause
/// and collects as usual; disposing then does nothing. Process-wide: for a command's action, not for library code.
/// </summary>
internal readonly struct CollectionPause : IDisposable
{
    private readonly bool _started;

    private CollectionPause(bool started) => _started = started;

    public static CollectionPause Start(long bytes)
    {
        try
        {
            // With one size the runtime commits it twice (small and large objects each); large ones are few here.
            return new CollectionPause(GC.TryStartNoGCRegion(bytes, bytes / 4));
        }
        catch (Exception e) when (e is ArgumentOutOfRangeException or InvalidOperationException)
        {
            return new CollectionPause(false); // more than the runtime allows, or a pause already: collect as usual
        }
    }

    public void Dispose()
    {
        if (_started && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion)
        {
            try
            {
                GC.EndNoGCRegion();
            }
            catch (InvalidOperationException)
            {
                // a collection ended it between the check and the call: nothing to end, and the command's work is done
            }
        }
    }
}
