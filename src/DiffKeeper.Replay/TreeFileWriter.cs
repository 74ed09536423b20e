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
/// takes one batch at a time, decodes its group once into the worker's own <see cref="GroupBuffer"/> and writes
/// each member from there (measured on W3, docs/benchmarks.md "w3rebuild": the shared cache's new array per group
/// made two thirds of an export's page faults). Files of no group go in batches of path-adjacent files.
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
    private const int MaxWorkers = 4;

    // At and above this size a file is decoded with VersionContent's parallel read (runs of blobs on every core).
    private const long BigFile = 16L << 20;

    private readonly TraceReader _reader;
    private readonly List<Job> _jobs;
    private readonly List<Batch> _batches = [];
    private readonly Lock _failureLock = new();
    private int _next = -1;
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
        writer.Plan(session);
        writer.Run(tree, written);
        return writer._bytes;
    }

    /// <summary>Prepares every file (on this thread: the catalog connection is the reader's) and batches them by group.</summary>
    private void Plan(SessionInfo session)
    {
        var byGroup = new Dictionary<long, int>();
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
                if (!byGroup.TryGetValue(g, out var b))
                {
                    byGroup[g] = b = _batches.Count;
                    _batches.Add(new Batch(g, []));
                }

                _batches[b].Files.Add(i);
                continue;
            }

            if (ungrouped is null || ungrouped.Files.Count == UngroupedBatch || job.Version.Size >= BigFile)
            {
                ungrouped = new Batch(-1, []);
                _batches.Add(ungrouped);
            }

            ungrouped.Files.Add(i);
        }
    }

    private void Run(SafeTreeWriter tree, Action<int, long>? written)
    {
        var workers = Math.Clamp(Math.Min(Environment.ProcessorCount, _batches.Count), 1, MaxWorkers);
        var others = new Task[workers - 1];
        for (var w = 0; w < others.Length; w++)
        {
            others[w] = Task.Factory.StartNew(() => Work(null, tree, null), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }

        Work(tree, tree, written);
        Task.WaitAll(others); // Work records its failures instead of throwing them

        if (_failure is not null)
        {
            ExceptionDispatchInfo.Capture(_failure).Throw();
        }
    }

    /// <param name="own">The writer this thread may use; null: a fork of <paramref name="root"/>, made and disposed here.</param>
    private void Work(SafeTreeWriter? own, SafeTreeWriter root, Action<int, long>? written)
    {
        SafeTreeWriter? tree = own;
        var held = new GroupBuffer();
        var scratch = ArrayPool<byte>.Shared.Rent(PackFormat.MaxRawLength);
        try
        {
            tree ??= root.Fork();
            for (int b; (b = Interlocked.Increment(ref _next)) < _batches.Count;)
            {
                var batch = _batches[b];
                held.Group = batch.Group;
                foreach (var i in batch.Files)
                {
                    if (i > Volatile.Read(ref _failedAt))
                    {
                        continue; // a later file than one that failed: never needed
                    }

                    try
                    {
                        WriteFile(tree, _jobs[i], held, ref scratch);
                    }
                    catch (Exception e)
                    {
                        Fail(i, e);
                        continue;
                    }

                    var done = Interlocked.Increment(ref _done);
                    var bytes = Interlocked.Add(ref _bytes, _jobs[i].Version.Size);
                    written?.Invoke(done, bytes);
                }
            }
        }
        catch (Exception e)
        {
            Fail(-1, e); // the worker itself could not start: as if before every file
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratch);
            if (own is null)
            {
                tree?.Dispose();
            }
        }
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

    private void WriteFile(SafeTreeWriter tree, Job job, GroupBuffer held, ref byte[] scratch)
    {
        if (job.Error is not null)
        {
            ExceptionDispatchInfo.Capture(job.Error).Throw();
        }

        var (path, v, prepared) = (job.Path, job.Version, job.Prepared!);
        using var file = tree.CreateFile(path);

        // The file is new (O_EXCL), so its length is the end of the furthest write: tracked here instead of asked
        // from the kernel (an fstat per file).
        long end = 0;
        if (v.Size >= BigFile)
        {
            VersionContent.Read(_reader, prepared, (data, offset) =>
            {
                SafeTreeWriter.Write(file, data.Span, offset, path);
                InterlockedMax(ref end, offset + data.Length);
            }, parallel: true);
        }
        else
        {
            VersionContent.ReadHeld(_reader, prepared, held, ref scratch, (data, offset) =>
            {
                SafeTreeWriter.Write(file, data, offset, path);
                end = Math.Max(end, offset + data.Length);
            });
        }

        if (end != v.Size)
        {
            RandomAccess.SetLength(file, v.Size); // a hole at the end
        }

        SafeTreeWriter.SetFileMetadata(file, v.Mode, v.MtimeNs, path);
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
