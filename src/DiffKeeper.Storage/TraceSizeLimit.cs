using System.Diagnostics;
using DiffKeeper.Core;

namespace DiffKeeper.Storage;

/// <summary>
/// <c>record --max-trace-size</c>: the bytes the files of a trace (catalog, its write-ahead log, packs) may take.
/// Two parts use it. The ring (<see cref="Maintenance.PrunePolicy.DropOldestBytes"/>, run by the recorder's
/// background maintenance) drops the oldest file contents once the trace passes <see cref="RingStart"/>, down towards
/// <see cref="RingTarget"/>, so there is room for its own repack. The stop: a <see cref="TraceWriter"/> given this
/// limit refuses, once, the pack append or event that would take the trace past <see cref="Bytes"/>, with an
/// exit-10 <see cref="DiffKeeperException"/>, which the recorder handles as a full disk (the command runs on, the
/// session gets LOST and EXIT, nothing committed is lost). After that refusal the limit is spent: the rows that
/// close the session are written. Thread-safe.
/// </summary>
public sealed class TraceSizeLimit
{
    /// <summary>The least limit accepted: an empty trace's catalog takes about 100 KiB.</summary>
    public const long Minimum = 1 << 20;

    /// <summary>What one event row costs the catalog, about, for the check between two measures.</summary>
    private const long EventRowBytes = 96;

    private static readonly long RemeasureTicks = Stopwatch.Frequency / 20;
    private readonly string _traceDir;
    private readonly Lock _lock = new();
    private long _measured;
    private long _measuredAt;
    private bool _everMeasured;
    private long _grown;
    private int _spent;

    public TraceSizeLimit(string traceDir, long bytes)
    {
        if (bytes < Minimum)
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), "a trace size limit is at least 1 MiB");
        }

        _traceDir = traceDir;
        Bytes = bytes;
    }

    public long Bytes { get; }

    /// <summary>The ring starts dropping the oldest contents above this (half the limit).</summary>
    public long RingStart => Bytes / 2;

    /// <summary>What the ring drops down towards (a quarter of the limit).</summary>
    public long RingTarget => Bytes / 4;

    /// <summary>
    /// Above this (three quarters of the limit) the recorder stores nothing more until the ring has run once: the
    /// last quarter is the room for one more version while the ring works, so a fast writer on a loaded machine
    /// slows the recording's reading instead of racing the ring past the limit.
    /// </summary>
    public long WaitAbove => Bytes - Bytes / 4;

    /// <summary>Whether the limit stopped the recording (<see cref="Check"/> threw).</summary>
    public bool Reached => Volatile.Read(ref _spent) == 1;

    /// <summary>How the limit is named to people: "--max-trace-size 8 MiB".</summary>
    public string Describe() => $"--max-trace-size {ByteSize.Format(Bytes)}";

    /// <summary>
    /// The ring's prune policy for a trace of <paramref name="size"/> bytes: drop the oldest contents down towards
    /// <see cref="RingTarget"/>; null while the trace is under <see cref="RingStart"/>.
    /// </summary>
    public Maintenance.PrunePolicy? RingPolicy(long size) => size <= RingStart ? null
        : new Maintenance.PrunePolicy(null, null) { DropOldestBytes = size - RingTarget, Note = Describe() };

    /// <summary>The bytes of the trace's files now: catalog.db, catalog.db-wal, and every pack file.</summary>
    public static long Measure(string traceDir)
    {
        var total = 0L;
        foreach (var name in (ReadOnlySpan<string>)["catalog.db", "catalog.db-wal"])
        {
            total += LengthOf(Path.Combine(traceDir, name));
        }

        var packs = Path.Combine(traceDir, "packs");
        if (Directory.Exists(packs))
        {
            foreach (var file in Directory.EnumerateFiles(packs, "*.pack", SearchOption.AllDirectories))
            {
                total += LengthOf(file);
            }
        }

        return total;
    }

    /// <summary>
    /// The writer, before it adds <paramref name="bytes"/> (a pack record) or an event (<paramref name="bytes"/> 0):
    /// throws once when the trace would pass the limit. Measures the files at most every 50 ms and counts what was
    /// added since.
    /// </summary>
    internal void Check(long bytes)
    {
        if (Reached)
        {
            return;
        }

        var size = Size(bytes == 0 ? EventRowBytes : bytes);
        if (size > Bytes && Interlocked.Exchange(ref _spent, 1) == 0)
        {
            throw new DiffKeeperException(ExitCode.SystemError,
                $"the trace reached its size limit ({Describe()}: {ByteSize.Format(size)} with this change, its oldest contents already dropped as far as they can be)");
        }
    }

    /// <summary>
    /// The trace's size as <see cref="Check"/> sees it: measured at most every 50 ms, plus what was added since.
    /// </summary>
    public long Current() => Size(0);

    /// <summary>The next <see cref="Current"/> or check measures the files again (the ring has just deleted some).</summary>
    public void Remeasure()
    {
        lock (_lock)
        {
            _everMeasured = false;
        }
    }

    private long Size(long adding)
    {
        lock (_lock)
        {
            var now = Stopwatch.GetTimestamp();
            if (!_everMeasured || now - _measuredAt >= RemeasureTicks)
            {
                _measured = Measure(_traceDir);
                _measuredAt = now;
                _everMeasured = true;
                _grown = 0;
            }

            _grown += adding;
            return _measured + _grown;
        }
    }

    private static long LengthOf(string path)
    {
        try
        {
            return new FileInfo(path).Length;
        }
        catch (FileNotFoundException)
        {
            return 0;
        }
    }
}
