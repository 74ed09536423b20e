using System.Diagnostics;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Fanotify;

namespace DiffKeeper.Recording;

/// <summary>
/// `record` with eBPF: the <see cref="WriteWitness"/> of a command that runs on while its big files are read, so a
/// version may read only the blocks the tree's write events touched (<see cref="BigFileVersions.TryIngest"/>, whose
/// remarks say why that is never worse than a whole read). Keep mode refreshes its witness at each cut, with the app
/// stopped; here nothing is stopped, so the witness is refreshed around each such read (<see cref="Refresh"/>: one
/// non-blocking read of the fanotify queue and one BPF map lookup), after each commit (so its queue does not fill),
/// and once more when the command has ended (<see cref="Finish"/>). The /proc scan for outside holders of newly
/// watched files runs after a commit (<see cref="Scan"/>), never per event or per read. The tree's processes are those eBPF follows
/// now (its map of tracked processes, asked per fanotify event of a pid not known yet) and those it delivered events
/// of since the commit before last (a process that exited with its fanotify events still queued); a process of the
/// tree known to neither only makes its file be read whole, and forgetting the old ones keeps a pid reused by
/// another process from being trusted long. (With the pids of events alone, as keep mode trusts between its cuts, a
/// refresh after a commit that reads the app's fanotify events before their eBPF events are handled, two commits
/// after its last handled one, taints the file: the likely cause of a whole read after the baseline in one
/// RecordBigFileTests run of three at load 12, not reproduced.) Not thread-safe:
/// the recorder's consumer thread uses it, and the recorder's thread before the consumer starts and after it ends.
/// </summary>
internal sealed class LiveWriteWitness : IDisposable
{
    private readonly WriteWitness _witness;
    private readonly ICaptureSource _source;
    private readonly BigFileVersions _bigFiles;
    private readonly TextWriter _log;
    private HashSet<int> _current = [];
    private HashSet<int> _previous = [];
    private HashSet<int> _trusted = [];

    private LiveWriteWitness(WriteWitness witness, ICaptureSource source, BigFileVersions bigFiles, TextWriter log)
    {
        _witness = witness;
        _source = source;
        _bigFiles = bigFiles;
        _log = log;
        bigFiles.Witness = witness;
        bigFiles.RefreshWitness = Refresh;
    }

    /// <summary>
    /// A witness for <paramref name="bigFiles"/> when the source counts the tree's unseen writers (eBPF) and fanotify
    /// is available (else says once why big files are read whole); null otherwise.
    /// </summary>
    public static LiveWriteWitness? TryStart(ICaptureSource source, BigFileVersions bigFiles, TextWriter log)
    {
        if (source.UnseenWriters is null)
        {
            return null; // no written ranges to use (inotify, fanotify)
        }

        if (WriteWitness.TryCreate(out var why) is not { } witness)
        {
            log.WriteLine($"diffkeeper: big files are read whole at every version: cannot watch them for writers outside the command ({why})");
            return null;
        }

        return new LiveWriteWitness(witness, source, bigFiles, log);
    }

    // The tree: a process eBPF follows now (its map of tracked processes), or one it delivered events of since the
    // commit before last (it may have exited since, with its fanotify events still queued).
    private bool InTree(int pid) => _trusted.Contains(pid) || _source.InTree(pid);

    /// <summary>An event of the tree: its process is the tree's.</summary>
    public void Saw(in CaptureEvent e)
    {
        // A storm of events comes from one process: a set operation per event only when the process changes.
        if (e.Pid is { } pid && pid != _lastSeen && _current.Add(pid))
        {
            _trusted.Add(pid);
        }

        _lastSeen = e.Pid ?? 0;
    }

    // The pid of the last event, while it is in _current (AfterCommit clears that and this).
    private int _lastSeen;

    /// <summary>Takes in what the witness learned since the last call (see <see cref="WriteWitness.Refresh"/>).</summary>
    public void Refresh()
    {
        if (_witness.Refresh(InTree, _source.UnseenWriters ?? ulong.MaxValue) && _bigFiles.VersionsFromWrites > 0)
        {
            _log.WriteLine("diffkeeper: the command mapped a file it opened for writing shared, or set up io_uring or AIO, whose writes no eBPF event carries: big files are read whole from now on");
        }
    }

    /// <summary>After a commit: empties the witness's queue, looks for outside holders of the files watched since, and forgets old pids.</summary>
    public void AfterCommit()
    {
        Refresh();
        Scan();
        (_previous, _current) = (_current, _previous);
        _current.Clear();
        _lastSeen = 0;
        _trusted = [.. _previous];
    }

    /// <summary>
    /// Looks through /proc for outside holders of the files first watched (or tainted) since the last scan: after the
    /// baseline, and after commits, but not sooner than ten times the last scan's duration after it. A scan reads
    /// every process's fd table and maps (26-160 ms for ~110 processes at load 9-11, docs/benchmarks.md "bigrec"),
    /// and a file an outside process keeps open for writing asks for one after each of its reads: so the scans take
    /// at most about a tenth of a core, as the reads of a hot big file do. A file waiting for a scan is read whole.
    /// </summary>
    public void Scan()
    {
        var started = Stopwatch.GetTimestamp();
        if (started < _nextScanAt)
        {
            return;
        }

        if (_witness.ScanNewWatches(InTree))
        {
            _nextScanAt = started + 11 * (Stopwatch.GetTimestamp() - started);
        }
    }

    private long _nextScanAt;

    /// <summary>
    /// The command has ended and every event is handled: a last refresh, then the files whose newest version came
    /// from written blocks and that are no longer vouched for are marked to be read whole by the reconcile scan.
    /// </summary>
    public int Finish(RecordingCore core)
    {
        Refresh();
        return core.ReadWholeWhereNotVouched();
    }

    public void Dispose() => _witness.Dispose();
}
