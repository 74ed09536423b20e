using DiffKeeper.Core;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// What the keep agent has done, for the metrics endpoint. Written by the agent's thread, read by any thread:
/// every field is read and written atomically; a reader may see counters of slightly different moments.
/// </summary>
public sealed class AgentCounters
{
    /// <summary>Upper bounds (seconds) of the flush-lag histogram buckets; +Inf is implied.</summary>
    public static readonly double[] FlushLagBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private readonly long[] _events = new long[Enum.GetValues<ChangeOp>().Max(o => (int)o) + 1];
    private readonly long[] _lagBuckets = new long[FlushLagBuckets.Length];
    private readonly Lock _lagLock = new();
    private long _lagCount;
    private double _lagSum;
    private long _versions;
    private long _lost;
    private long _storedBytes;
    private long _rawBytes;
    private long _storedWritten;
    private long _diskSyncs;
    private double _lastDiskSync;
    private long _queueDepth;
    private long _cuts;
    private long _frozenCuts;
    private long _freezeTimeouts;
    private long _freezeTicks;
    private double _recoverySeconds;
    private long _recoveryFiles;
    private long _recoveryBytes;
    private int _appRunning;

    public void CountEvent(ChangeOp op) => Interlocked.Increment(ref _events[(int)op]);

    public long Events(ChangeOp op) => Interlocked.Read(ref _events[(int)op]);

    public long Versions { get => Interlocked.Read(ref _versions); set => Interlocked.Exchange(ref _versions, value); }

    public long LostEvents { get => Interlocked.Read(ref _lost); set => Interlocked.Exchange(ref _lost, value); }

    /// <summary>Bytes of pack records in the store (all sessions).</summary>
    public long StoredBytes { get => Interlocked.Read(ref _storedBytes); set => Interlocked.Exchange(ref _storedBytes, value); }

    /// <summary>Bytes of file content read by this agent (every version in full, before dedup and compression).</summary>
    public long RawBytes { get => Interlocked.Read(ref _rawBytes); set => Interlocked.Exchange(ref _rawBytes, value); }

    /// <summary>Bytes of pack records this agent appended; raw over this is the dedup and compression ratio.</summary>
    public long StoredBytesWritten { get => Interlocked.Read(ref _storedWritten); set => Interlocked.Exchange(ref _storedWritten, value); }

    public long QueueDepth { get => Interlocked.Read(ref _queueDepth); set => Interlocked.Exchange(ref _queueDepth, value); }

    public long Cuts => Interlocked.Read(ref _cuts);

    public long FrozenCuts => Interlocked.Read(ref _frozenCuts);

    public long FreezeTimeouts => Interlocked.Read(ref _freezeTimeouts);

    public double FreezeSeconds => Interlocked.Read(ref _freezeTicks) / (double)TimeSpan.TicksPerSecond;

    public double RecoverySeconds { get => Volatile.Read(ref _recoverySeconds); set => Volatile.Write(ref _recoverySeconds, value); }

    public long RecoveryFiles { get => Interlocked.Read(ref _recoveryFiles); set => Interlocked.Exchange(ref _recoveryFiles, value); }

    public long RecoveryBytes { get => Interlocked.Read(ref _recoveryBytes); set => Interlocked.Exchange(ref _recoveryBytes, value); }

    public bool AppRunning { get => Volatile.Read(ref _appRunning) == 1; set => Volatile.Write(ref _appRunning, value ? 1 : 0); }

    public long DiskSyncs => Interlocked.Read(ref _diskSyncs);

    public double LastDiskSyncSeconds => Volatile.Read(ref _lastDiskSync);

    public void CountDiskSync(TimeSpan took)
    {
        Volatile.Write(ref _lastDiskSync, took.TotalSeconds);
        Interlocked.Increment(ref _diskSyncs);
    }

    public void CountCut(bool frozen, TimeSpan freeze, bool timedOut)
    {
        Interlocked.Increment(ref _cuts);
        if (frozen)
        {
            Interlocked.Increment(ref _frozenCuts);
            Interlocked.Add(ref _freezeTicks, freeze.Ticks);
        }

        if (timedOut)
        {
            Interlocked.Increment(ref _freezeTimeouts);
        }
    }

    /// <summary>One change became durable <paramref name="seconds"/> after it was observed.</summary>
    public void ObserveFlushLag(double seconds)
    {
        lock (_lagLock)
        {
            for (var i = 0; i < FlushLagBuckets.Length; i++)
            {
                if (seconds <= FlushLagBuckets[i])
                {
                    _lagBuckets[i]++;
                }
            }

            _lagCount++;
            _lagSum += seconds;
        }
    }

    /// <summary>Cumulative bucket counts (as Prometheus wants them), total count and sum, taken together.</summary>
    public (long[] Cumulative, long Count, double Sum) FlushLag()
    {
        lock (_lagLock)
        {
            return ((long[])_lagBuckets.Clone(), _lagCount, _lagSum);
        }
    }
}
