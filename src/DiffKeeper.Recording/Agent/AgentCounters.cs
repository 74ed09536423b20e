using DiffKeeper.Core;

namespace DiffKeeper.Recording.Agent;

/// <summary>
/// What the keep agent has done, for the metrics endpoint. Written by the agent's thread, read by any thread:
/// every field is read and written atomically; a reader may see counters of slightly different moments.
/// </summary>
public sealed class AgentCounters
{
    /// <summary>The capture backend the agent runs ("inotify" until it has started one).</summary>
    public string Capture { get; set; } = "inotify";

    private readonly long[] _events = new long[Enum.GetValues<ChangeOp>().Max(o => (int)o) + 1];
    private long _versions;
    private long _versionsFromWrites;
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
    private long _gcRuns;
    private long _gcFailures;
    private int _gcRunning;
    private long _pruned;
    private long _swept;
    private long _freed;
    private long _gcSteps;
    private long _gcStepTicks;
    private long _gcStepMaxTicks;

    /// <summary>Time from a change being observed to the commit of the cut that holds it.</summary>
    public Histogram FlushLag { get; } = new(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10);

    /// <summary>
    /// How late each cut started after it was due (changes quiet for the debounce, or the oldest one at its
    /// maximum age): the agent's loop was handling events, running a retention step, or not scheduled.
    /// </summary>
    public Histogram CutDelay { get; } = new(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1);

    public void CountEvent(ChangeOp op) => Interlocked.Increment(ref _events[(int)op]);

    public long Events(ChangeOp op) => Interlocked.Read(ref _events[(int)op]);

    public long Versions { get => Interlocked.Read(ref _versions); set => Interlocked.Exchange(ref _versions, value); }

    /// <summary>Versions of big files stored from their written blocks alone (eBPF, nothing else wrote them).</summary>
    public long VersionsFromWrites { get => Interlocked.Read(ref _versionsFromWrites); set => Interlocked.Exchange(ref _versionsFromWrites, value); }

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
    public void ObserveFlushLag(double seconds) => FlushLag.Observe(seconds);

    /// <summary>Retention passes completed, and those that failed (each logged; the next pass retries).</summary>
    public long GcRuns => Interlocked.Read(ref _gcRuns);

    public long GcFailures => Interlocked.Read(ref _gcFailures);

    /// <summary>Whether a retention pass is running now.</summary>
    public bool GcRunning { get => Volatile.Read(ref _gcRunning) == 1; set => Volatile.Write(ref _gcRunning, value ? 1 : 0); }

    public long PrunedVersions => Interlocked.Read(ref _pruned);

    public long SweptBlobs => Interlocked.Read(ref _swept);

    /// <summary>Committed pack bytes retention passes freed (their own appends and the agent's meanwhile counted against them).</summary>
    public long GcFreedBytes => Interlocked.Read(ref _freed);

    public void CountGcRun(long pruned, long swept, long freed)
    {
        Interlocked.Add(ref _pruned, pruned);
        Interlocked.Add(ref _swept, swept);
        Interlocked.Add(ref _freed, Math.Max(0, freed));
        Interlocked.Increment(ref _gcRuns);
    }

    public void CountGcFailure() => Interlocked.Increment(ref _gcFailures);

    /// <summary>Retention steps the agent's thread ran between cuts, and how long they took in all.</summary>
    public long GcSteps => Interlocked.Read(ref _gcSteps);

    public double GcStepSeconds => Interlocked.Read(ref _gcStepTicks) / (double)TimeSpan.TicksPerSecond;

    /// <summary>The longest single retention step: the most a due cut waited for one.</summary>
    public double GcStepMaxSeconds => Interlocked.Read(ref _gcStepMaxTicks) / (double)TimeSpan.TicksPerSecond;

    public void CountGcSteps(int steps, TimeSpan elapsed, TimeSpan longest)
    {
        Interlocked.Add(ref _gcSteps, steps);
        Interlocked.Add(ref _gcStepTicks, elapsed.Ticks);
        if (longest.Ticks > Interlocked.Read(ref _gcStepMaxTicks))
        {
            Interlocked.Exchange(ref _gcStepMaxTicks, longest.Ticks); // one writer: the agent's thread
        }
    }
}
