namespace DiffKeeper.Recording.Agent;

/// <summary>
/// A Prometheus-style histogram of seconds: fixed upper bounds, cumulative counts, a count and a sum, read
/// together. Thread-safe: observed on the agent's thread, read by the metrics endpoint's.
/// </summary>
public sealed class Histogram(params double[] bounds)
{
    private readonly long[] _buckets = new long[bounds.Length];
    private readonly Lock _lock = new();
    private long _count;
    private double _sum;
    private double _max;

    /// <summary>Upper bounds (seconds) of the buckets; +Inf is implied.</summary>
    public IReadOnlyList<double> Bounds { get; } = bounds;

    public void Observe(double seconds)
    {
        lock (_lock)
        {
            for (var i = 0; i < bounds.Length; i++)
            {
                if (seconds <= bounds[i])
                {
                    _buckets[i]++;
                }
            }

            _count++;
            _sum += seconds;
            _max = Math.Max(_max, seconds);
        }
    }

    /// <summary>Cumulative bucket counts (as Prometheus wants them), total count, sum and the largest observation, taken together.</summary>
    public (long[] Cumulative, long Count, double Sum, double Max) Read()
    {
        lock (_lock)
        {
            return ((long[])_buckets.Clone(), _count, _sum, _max);
        }
    }
}
