using System.Buffers;
using System.Runtime.ExceptionServices;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Replay;

/// <summary>
/// Writes the files of a tree (their parent directories made already) on every core, group by group. Small files
/// are stored as slices of zstd groups of ~1 MiB, and a changed one as a delta against a slice of the group it came
/// from: the files are batched by the group their bytes start from (<see cref="BlobReader.GroupOf"/>), and a worker
/// takes one batch at a time, decodes its group once into the worker's own <see cref="GroupBuffer"/>, decodes each
/// member (a slice stays where it lies in the buffer; a delta is decoded against it), then creates and writes the
/// batch's files holding a lock, so one worker at a time is in the file system while the others decode (measured on W3, docs/benchmarks.md "w3rebuild": the shared cache's new array per group
/// made two thirds of an export's page faults). Files of no group go in batches of path-adjacent files. The calling
/// thread prepares the files (catalog reads, <see cref="VersionContent.Prepare"/>) and publishes batches of up to
/// 16 files of a group as it goes, so the other workers write while it reads the catalog; a worker takes a batch of
/// the group it holds first.
/// <para>
/// Errors: the one reported is the first in path order, as a sequential writer would report it: every file
/// before a failed one is still written (a worker skips only files after the earliest failure), then the earliest
/// failure is thrown. Each file is checked as <see cref="VersionContent.Read"/> checks it. Not thread-safe itself;
/// it runs its workers and returns when all are done.
/// </para>
/// </summary>
internal sealed class TreeFileWriter
{
    private const int UngroupedBatch = 64;
    private const int GroupBatch = 16;
    private const int MaxWorkers = 4;

    // Decoded bytes (beyond a held group's) a worker keeps before it writes them out.
    private const long FlushBytes = 4L << 20;

    // From this size on a file is written as it is decoded, through one buffer, as before this class (W1's and W2's
    // single file of 1 and 10 MiB): decoding it whole first would hold all of it in new memory.
    private const long StreamedFile = 1L << 20;

    // At and above this size a file is decoded with VersionContent's parallel read (runs of blobs on every core).
    private const long BigFile = 16L << 20;

    private readonly TraceReader _reader;
    private readonly List<Job> _jobs;
    private readonly Lock _failureLock = new();

    // Held while files are created and written: one worker at a time in the file system, the others decode. Two
    // workers creating files in one directory wait on its lock in the kernel, spinning (rwsem_spin_on_owner, up to
    // 13% of an export's samples, and 40-100 ms more system time than one worker, measured on W3).
    private readonly Lock _fileSystem = new();
    private readonly object _queue = new(); // guards _pending and _planned; Monitor.Wait needs an object
    private readonly List<Batch> _pending = [];
    private readonly List<long> _heldByWorkers = []; // the group each worker holds (-1: none), one entry per worker
    private bool _planned;
    private int _failedAt = int.MaxValue;
    private Exception? _failure;
    private int _done;
    private long _bytes;

    private sealed record Job(string Path, VersionRecord Version)
    {
        public PreparedVersion? Prepared { get; set; }

        public Exception? Error { get; set; }
    }

    private sealed record Batch(long Group, List<int> Files);

    private TreeFileWriter(TraceReader reader, List<Job> jobs)
    {
        _reader = reader;
        _jobs = jobs;
    }

    /// <summary>
    /// Writes <paramref name="files"/> (output-relative paths in path order, each a new file) below
    /// <paramref name="tree"/>: contents, holes, modes and mtimes. <paramref name="written"/> is told the number of
    /// files and bytes written so far, on this thread. Returns the bytes written (the files' sizes).
    /// </summary>
    public static long Write(TraceReader reader, SessionInfo session, SafeTreeWriter tree, IReadOnlyList<(string Path, VersionRecord Version)> files,
        Action<int, long>? written)
    {
        var writer = new TreeFileWriter(reader, files.Select(f => new Job(f.Path, f.Version)).ToList());
        writer.Run(session, tree, written);
        return writer._bytes;
    }

    /// <summary>
    /// The other workers start at once and write the batches this thread publishes while it prepares the files (the
    /// catalog connection is the reader's, so preparing stays here); then this thread writes too.
    /// </summary>
    private void Run(SessionInfo session, SafeTreeWriter tree, Action<int, long>? written)
    {
        var workers = Math.Clamp(Math.Min(Environment.ProcessorCount, _jobs.Count), 1, MaxWorkers);
        var others = new Task[workers - 1];
        for (var w = 0; w < others.Length; w++)
        {
            others[w] = Task.Factory.StartNew(() => Work(null, tree, null), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        try
        {
            Plan(session);
        }
        catch (Exception e)
        {
            Fail(-1, e); // before every file: the workers skip what is left
        }
        finally
        {
            lock (_queue)
            {
                _planned = true;
                Monitor.PulseAll(_queue);
            }
        }

        Work(tree, tree, written);
        Task.WaitAll(others); // Work records its failures instead of throwing them

        if (_failure is not null)
        {
            ExceptionDispatchInfo.Capture(_failure).Throw();
        }
    }

    /// <summary>
    /// Prepares every file in path order and publishes it in a batch: up to <see cref="GroupBatch"/> files of one
    /// group (published when full, the rest at the end), or up to <see cref="UngroupedBatch"/> adjacent files of none.
    /// </summary>
    private void Plan(SessionInfo session)
    {
        var open = new Dictionary<long, Batch>();
        Batch? ungrouped = null;
        for (var i = 0; i < _jobs.Count; i++)
        {
            var job = _jobs[i];
            long? group = null;
            try
            {
                job.Prepared = VersionContent.Prepare(_reader, session, job.Version);
                if (job.Version.Size < BigFile)
                {
                    group = job.Prepared.FirstGroup(_reader.Blobs);
                }
            }
            catch (DiffKeeperException e)
            {
                job.Error = e; // reported when its turn comes, so the first failure in path order is the one reported
            }

            if (group is { } g)
            {
                if (!open.TryGetValue(g, out var batch))
                {
                    open[g] = batch = new Batch(g, []);
                }

                batch.Files.Add(i);
                if (batch.Files.Count == GroupBatch)
                {
                    open.Remove(g);
                    Publish(batch);
                }

                continue;
            }

            if (job.Version.Size >= BigFile)
            {
                Publish(new Batch(-1, [i]));
                continue;
            }

            ungrouped ??= new Batch(-1, []);
            ungrouped.Files.Add(i);
            if (ungrouped.Files.Count == UngroupedBatch)
            {
                Publish(ungrouped);
                ungrouped = null;
            }
        }

        foreach (var batch in open.Values.OrderBy(b => b.Files[0]))
        {
            Publish(batch);
        }

        if (ungrouped is not null)
        {
            Publish(ungrouped);
        }
    }

    private int? Find(Func<long, bool> group)
    {
        for (var i = 0; i < _pending.Count; i++)
        {
            if (group(_pending[i].Group))
            {
                return i;
            }
        }

        return null;
    }

    private void Publish(Batch batch)
    {
        lock (_queue)
        {
            _pending.Add(batch);
            Monitor.Pulse(_queue);
        }
    }

    /// <summary>
    /// The next batch: one of <paramref name="held"/>'s group first (the buffer holds it already), else the first
    /// published whose group no other worker holds, else the first published; null when all are taken. Without the
    /// second rule two workers decoded the same groups: 30-32 group decodes for W3's 20 groups, 21 with one worker.
    /// </summary>
    private Batch? Take(long held)
    {
        lock (_queue)
        {
            while (true)
            {
                if (_pending.Count > 0)
                {
                    var at = Find(g => g >= 0 && g == held) ?? Find(g => g < 0 || !_heldByWorkers.Contains(g)) ?? 0;
                    var batch = _pending[at];
                    _pending.RemoveAt(at);
                    if (batch.Group != held)
                    {
                        _heldByWorkers.Remove(held);
                        _heldByWorkers.Add(batch.Group);
                    }

                    return batch;
                }

                if (_planned)
                {
                    return null;
                }

                Monitor.Wait(_queue);
            }
        }
    }

    /// <param name="own">The writer this thread may use; null: a fork of <paramref name="root"/>, made and disposed here.</param>
    private void Work(SafeTreeWriter? own, SafeTreeWriter root, Action<int, long>? written)
    {
        SafeTreeWriter? tree = own;
        var held = new GroupBuffer();
        var ready = new List<(int File, int First, int Count)>();
        var extents = new List<VersionContent.ExtentBytes>();
        try
        {
            tree ??= root.Fork();
            while (Take(held.Group) is { } batch)
            {
                held.Group = batch.Group;
                long rented = 0;
                foreach (var i in batch.Files)
                {
                    var job = _jobs[i];
                    if (i > Volatile.Read(ref _failedAt))
                    {
                        continue; // a later file than one that failed: never needed
                    }

                    if (job.Error is not null)
                    {
                        Fail(i, job.Error);
                        continue;
                    }

                    if (job.Version.Size >= StreamedFile)
                    {
                        Flush(tree, ready, extents, written);
                        rented = 0;
                        lock (_fileSystem)
                        {
                            WriteStreamed(tree, i, written);
                        }

                        continue;
                    }

                    var first = extents.Count;
                    try
                    {
                        rented += VersionContent.DecodeHeld(_reader, job.Prepared!, held, extents);
                    }
                    catch (Exception e)
                    {
                        Fail(i, e);
                        continue;
                    }

                    ready.Add((i, first, extents.Count - first));
                    if (rented >= FlushBytes)
                    {
                        Flush(tree, ready, extents, written);
                        rented = 0;
                    }
                }

                Flush(tree, ready, extents, written); // before the buffer is pointed at another group
            }
        }
        catch (Exception e)
        {
            Fail(-1, e); // the worker itself could not start: as if before every file
        }
        finally
        {
            VersionContent.Release(extents);
            if (own is null)
            {
                tree?.Dispose();
            }
        }
    }

    /// <summary>Creates and writes the decoded files, holding the file-system lock, then returns their rented bytes.</summary>
    private void Flush(SafeTreeWriter tree, List<(int File, int First, int Count)> ready, List<VersionContent.ExtentBytes> extents,
        Action<int, long>? written)
    {
        lock (_fileSystem)
        {
            foreach (var (i, first, count) in ready)
            {
                if (i > Volatile.Read(ref _failedAt))
                {
                    continue;
                }

                var (path, v) = (_jobs[i].Path, _jobs[i].Version);
                try
                {
                    using var file = tree.CreateFile(path);
                    long end = 0; // the file is new (O_EXCL): its length is the end of the furthest write
                    for (var e = first; e < first + count; e++)
                    {
                        SafeTreeWriter.Write(file, extents[e].Bytes.Span, extents[e].Offset, path);
                        end = Math.Max(end, extents[e].Offset + extents[e].Bytes.Length);
                    }

                    if (end != v.Size)
                    {
                        RandomAccess.SetLength(file, v.Size); // a hole at the end
                    }

                    SafeTreeWriter.SetFileMetadata(file, v.Mode, v.MtimeNs, path);
                }
                catch (Exception e)
                {
                    Fail(i, e);
                    continue;
                }

                Written(i, written);
            }
        }

        ready.Clear();
        VersionContent.Release(extents);
    }

    private void Written(int file, Action<int, long>? written)
    {
        var done = Interlocked.Increment(ref _done);
        var bytes = Interlocked.Add(ref _bytes, _jobs[file].Version.Size);
        written?.Invoke(done, bytes);
    }

    private void Fail(int file, Exception e)
    {
        lock (_failureLock)
        {
            if (file < _failedAt)
            {
                _failedAt = file;
                _failure = e;
            }
        }
    }

    /// <summary>
    /// A file of <see cref="StreamedFile"/> bytes or more, written as it is decoded (not held whole in memory): blob
    /// by blob through one buffer, or from <see cref="BigFile"/> on, by runs of blobs on every core.
    /// </summary>
    private void WriteStreamed(SafeTreeWriter tree, int i, Action<int, long>? written)
    {
        var (path, v, prepared) = (_jobs[i].Path, _jobs[i].Version, _jobs[i].Prepared!);
        try
        {
            using var file = tree.CreateFile(path);
            long end = 0;
            VersionContent.Read(_reader, prepared, (data, offset) =>
            {
                SafeTreeWriter.Write(file, data.Span, offset, path);
                InterlockedMax(ref end, offset + data.Length);
            }, parallel: v.Size >= BigFile); // not the worker's group buffer: a streamed file's extents may alternate between groups, and the shared cache decodes each once
            if (end != v.Size)
            {
                RandomAccess.SetLength(file, v.Size);
            }

            SafeTreeWriter.SetFileMetadata(file, v.Mode, v.MtimeNs, path);
        }
        catch (Exception e)
        {
            Fail(i, e);
            return;
        }

        Written(i, written);
    }

    private static void InterlockedMax(ref long target, long value)
    {
        for (var seen = Volatile.Read(ref target); seen < value; seen = Volatile.Read(ref target))
        {
            if (Interlocked.CompareExchange(ref target, value, seen) == seen)
            {
                return;
            }
        }
    }
}
