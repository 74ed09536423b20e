using System.Diagnostics;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// Measures how long this machine kept a runnable thread from running: a thread sleeps 1 ms at a time and records
/// the longest oversleep. The keep tests allow a change one flush interval plus that stall: when the test's own
/// thread could not run for 300 ms, the agent could not either, and no agent can commit while it is not running.
/// On an idle machine the stall is about a millisecond and the bound is the flush interval itself.
/// </summary>
public sealed class StallMeter : IDisposable
{
    private readonly Thread _thread;
    private volatile bool _stop;
    private long _maxTicks;

    public StallMeter()
    {
        _thread = new Thread(Measure) { IsBackground = true, Name = "stall meter" };
        _thread.Start();
    }

    /// <summary>The longest stall since the last <see cref="Reset"/>.</summary>
    public TimeSpan Max => TimeSpan.FromTicks(Interlocked.Read(ref _maxTicks));

    public void Reset() => Interlocked.Exchange(ref _maxTicks, 0);

    private void Measure()
    {
        while (!_stop)
        {
            var before = Stopwatch.GetTimestamp();
            Thread.Sleep(1);
            var over = Stopwatch.GetElapsedTime(before) - TimeSpan.FromMilliseconds(1);
            if (over.Ticks > Interlocked.Read(ref _maxTicks))
            {
                Interlocked.Exchange(ref _maxTicks, over.Ticks);
            }
        }
    }

    public void Dispose()
    {
        _stop = true;
        _thread.Join();
    }
}
