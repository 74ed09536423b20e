using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>What a block ingest reads: its data extents, and their bytes by positioned reads.</summary>
public interface IBlockSource
{
    /// <summary>The data extents of [<paramref name="from"/>, <paramref name="to"/>), in order, disjoint.</summary>
    List<(long Start, long End)> DataRanges(long from, long to);

    /// <summary>
    /// Fills <paramref name="into"/> with the bytes at <paramref name="offset"/> (inside one data extent); returns
    /// how many it had, fewer only where the content ends. Never moves a shared position.
    /// </summary>
    int Read(Span<byte> into, long offset);
}

/// <summary>An open file read in place with pread; SEEK_DATA/SEEK_HOLE name its data extents.</summary>
public sealed class FileBlockSource(SafeFileHandle file) : IBlockSource
{
    public List<(long Start, long End)> DataRanges(long from, long to) => BlockIngest.DataRanges(file, from, to);

    public int Read(Span<byte> into, long offset) => Packs.PackReader.ReadFully(file, into, offset);
}

/// <summary>
/// The data extents of a file copied into memory at one instant (keep mode takes it while the app is stopped, so
/// the stop lasts one read of the data and no hashing), to be hashed and stored after the app continues. It holds
/// exactly what the reads returned: a file that shrank while being read ends where the reads ended
/// (<see cref="Size"/>). Its buffers come from, and go back to, an <see cref="ImageBuffers"/> pool.
/// </summary>
public sealed class FrozenImage : IBlockSource, IDisposable
{
    private readonly ImageBuffers _pool;
    private readonly List<byte[]> _buffers;
    // Each data run of the image: file offset, length, buffer index, offset in that buffer (sorted by Start).
    private readonly List<(long Start, int Length, int Buffer, int At)> _runs;

    private readonly long _reserved;

    private FrozenImage(ImageBuffers pool, long reserved, List<byte[]> buffers, List<(long Start, int Length, int Buffer, int At)> runs, long size)
    {
        _pool = pool;
        _reserved = reserved;
        _buffers = buffers;
        _runs = runs;
        Size = size;
    }

    /// <summary>The file's size as the image holds it.</summary>
    public long Size { get; }

    /// <summary>Bytes of data copied.</summary>
    public long DataBytes => _runs.Sum(r => (long)r.Length);

    /// <summary>
    /// Copies the data extents of <paramref name="file"/> (<paramref name="size"/> bytes long) on every core; null,
    /// with nothing read, when they exceed what <paramref name="pool"/> may still lend.
    /// </summary>
    public static FrozenImage? Take(SafeFileHandle file, long size, ImageBuffers pool) =>
        Copy(file, size, ParallelDataRanges(file, size), pool, written: null);

    /// <summary>
    /// As <see cref="Take"/>, copying only the data extents of the blocks that <paramref name="written"/> (every byte
    /// range written since the file's previous version, of <paramref name="previousSize"/> bytes) touches: the image
    /// is to be stored over that version (<see cref="Written"/> says so), whose pieces stand for every other block.
    /// </summary>
    public static FrozenImage? TakeWritten(SafeFileHandle file, long size, IReadOnlyList<(long Start, long End)> written, long previousSize, ImageBuffers pool)
    {
        var ranges = new List<(long Start, long End)>();
        foreach (var (a, b) in BlockIngest.WrittenRegions(written, size, previousSize))
        {
            ranges.AddRange(BlockIngest.DataRanges(file, a, b));
        }

        return Copy(file, size, ranges, pool, written);
    }

    /// <summary>The written ranges this image was taken for (<see cref="TakeWritten"/>); null: it holds every data extent.</summary>
    public IReadOnlyList<(long Start, long End)>? Written { get; private init; }

    private const long SerialBytes = 8L << 20;

    private static FrozenImage? Copy(SafeFileHandle file, long size, List<(long Start, long End)> ranges, ImageBuffers pool,
        IReadOnlyList<(long Start, long End)>? written)
    {
        var total = ranges.Sum(r => r.End - r.Start);
        if (pool.TryReserve(total) is not { } reserved)
        {
            return null;
        }

        // Runs packed back to back into the pool's buffers, split where a buffer fills.
        var buffers = new List<byte[]>();
        var runs = new List<(long Start, int Length, int Buffer, int At)>();
        var at = ImageBuffers.BufferSize;
        foreach (var (s, e) in ranges)
        {
            for (var pos = s; pos < e;)
            {
                if (at == ImageBuffers.BufferSize)
                {
                    buffers.Add(pool.Rent());
                    at = 0;
                }

                var n = (int)Math.Min(e - pos, ImageBuffers.BufferSize - at);
                runs.Add((pos, n, buffers.Count - 1, at));
                at += n;
                pos += n;
            }
        }

        var got = new int[runs.Count];
        try
        {
            // A few written blocks are read on this thread: waking pool threads would cost more than the reads,
            // and on a loaded machine far more (the app is stopped meanwhile).
            void Read(int i) => got[i] = Packs.PackReader.ReadFully(file, buffers[runs[i].Buffer].AsSpan(runs[i].At, runs[i].Length), runs[i].Start);
            if (total < SerialBytes)
            {
                for (var i = 0; i < runs.Count; i++)
                {
                    Read(i);
                }
            }
            else
            {
                System.Threading.Tasks.Parallel.For(0, runs.Count, Read);
            }
        }
        catch (Exception e) when (e is not AggregateException)
        {
            pool.Return(buffers, reserved);
            throw;
        }
        catch (AggregateException e)
        {
            pool.Return(buffers, reserved);
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }

        var end = size;
        for (var i = 0; i < runs.Count; i++)
        {
            if (got[i] < runs[i].Length)
            {
                end = runs[i].Start + got[i]; // it shrank while being read: the image ends where the reads did
                runs[i] = runs[i] with { Length = got[i] };
                runs.RemoveRange(i + 1, runs.Count - i - 1);
                break;
            }
        }

        runs.RemoveAll(r => r.Length == 0);
        return new FrozenImage(pool, reserved, buffers, runs, end) { Written = written };
    }

    /// <summary>
    /// The file's data extents, looked up on every core: a sparse image has thousands, and each costs two lseeks.
    /// Each part of the file is searched through its own descriptor (a reopen of the same open file), as lseek moves
    /// the descriptor's shared offset and the kernel serializes lseeks of threads sharing one.
    /// </summary>
    private static List<(long Start, long End)> ParallelDataRanges(SafeFileHandle file, long size)
    {
        var parts = Math.Min(Environment.ProcessorCount, (int)Math.Max(1, size / (64L << 20)));
        if (parts <= 1)
        {
            return BlockIngest.DataRanges(file, 0, size);
        }

        var step = (size / parts + BlockPiece.BlockSize - 1) / BlockPiece.BlockSize * BlockPiece.BlockSize;
        var found = new List<(long Start, long End)>[parts];
        System.Threading.Tasks.Parallel.For(0, parts, i =>
        {
            var from = Math.Min(size, i * step);
            var to = i == parts - 1 ? size : Math.Min(size, (i + 1) * step);
            using var own = i == 0 ? null : Reopen(file);
            found[i] = BlockIngest.DataRanges(own ?? file, from, to);
        });
        var all = new List<(long Start, long End)>();
        foreach (var part in found)
        {
            foreach (var r in part)
            {
                if (all.Count > 0 && all[^1].End == r.Start)
                {
                    all[^1] = (all[^1].Start, r.End); // an extent across the parts' boundary
                }
                else
                {
                    all.Add(r);
                }
            }
        }

        return all;
    }

    private static SafeFileHandle? Reopen(SafeFileHandle file)
    {
        var fd = Native.Interop.Libc.Open($"/proc/self/fd/{(int)file.DangerousGetHandle()}", Native.Interop.Libc.O_RDONLY | Native.Interop.Libc.O_CLOEXEC, 0);
        return fd < 0 ? null : new SafeFileHandle(fd, ownsHandle: true);
    }

    public List<(long Start, long End)> DataRanges(long from, long to)
    {
        var result = new List<(long Start, long End)>();
        foreach (var r in _runs)
        {
            var s = Math.Max(r.Start, from);
            var e = Math.Min(r.Start + r.Length, to);
            if (e <= s)
            {
                continue;
            }

            if (result.Count > 0 && result[^1].End == s)
            {
                result[^1] = (result[^1].Start, e); // a run split where a buffer filled
            }
            else
            {
                result.Add((s, e));
            }
        }

        return result;
    }

    public int Read(Span<byte> into, long offset)
    {
        var i = FirstRunAt(offset);
        var total = 0;
        while (total < into.Length && i < _runs.Count && _runs[i].Start <= offset + total && offset + total < _runs[i].Start + _runs[i].Length)
        {
            var r = _runs[i];
            var skip = (int)(offset + total - r.Start);
            var n = Math.Min(into.Length - total, r.Length - skip);
            _buffers[r.Buffer].AsSpan(r.At + skip, n).CopyTo(into[total..]);
            total += n;
            i++;
        }

        return total;
    }

    private int FirstRunAt(long offset)
    {
        int lo = 0, hi = _runs.Count - 1;
        while (lo <= hi)
        {
            var mid = (lo + hi) >>> 1;
            if (_runs[mid].Start + _runs[mid].Length <= offset)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return lo;
    }

    public void Dispose()
    {
        _pool.Return(_buffers, _reserved);
        _buffers.Clear();
    }
}

/// <summary>
/// The memory frozen images borrow: 4 MiB buffers, at most <see cref="Budget"/> bytes lent at once; up to
/// <see cref="Retained"/> bytes are kept between cuts so a steady workload allocates nothing.
/// Not thread-safe: one owner takes and disposes images.
/// </summary>
public sealed class ImageBuffers(long budget)
{
    public const int BufferSize = 4 << 20;
    public const long Retained = 128L << 20;

    private readonly Stack<byte[]> _free = new();
    private long _lent;

    public long Budget { get; } = budget;

    /// <summary>Reserves room for <paramref name="dataBytes"/> of packed runs; the bytes reserved, or null over budget.</summary>
    internal long? TryReserve(long dataBytes)
    {
        var need = (dataBytes + BufferSize - 1) / BufferSize * BufferSize;
        if (_lent + need > Budget)
        {
            return null;
        }

        _lent += need;
        return need;
    }

    internal byte[] Rent() => _free.Count > 0 ? _free.Pop() : GC.AllocateUninitializedArray<byte>(BufferSize);

    internal void Return(List<byte[]> buffers, long reserved)
    {
        _lent -= reserved;
        foreach (var b in buffers)
        {
            if ((long)_free.Count * BufferSize < Retained)
            {
                _free.Push(b);
            }
        }
    }
}
