using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording;

/// <summary>
/// The native memory of followed copies (<see cref="NativeBuffer"/>): blocks of a power of two from 4 KiB to 1 MiB cut
/// from 2 MiB chunks, each chunk one transparent huge page where the kernel gives one (<c>MADV_HUGEPAGE</c>) and
/// populated in one call where it does not (<c>MADV_POPULATE_WRITE</c>); a larger copy is a mapping of its own, advised
/// the same way but not populated (a capacity doubled ahead of the size may never be touched). glibc's malloc gave an
/// untar's ~130 MB of copies fresh heap pages one fault at a time (~40,000 faults at ~7–25 µs each on this VM, a trap
/// to the hypervisor, on the recorder's thread). A buddy allocator: a block is cut by halving a larger free one, and a
/// freed block whose buddy (the other half of the block twice its size) is free merges with it, up to a whole chunk,
/// so memory freed at one size serves the next copy of any size. With a free list per size and no merging, an untar
/// mapped 2–3× the chunks its copies ever held at once (copies grow by doubling, and the sizes in use drift): each new
/// chunk is 2 MiB the host zeroes on the recorder's thread (docs/benchmarks.md, branch `untar6`). Of the free blocks of
/// a size the one freed last is given first (its pages are the warm ones). Chunks are never unmapped (a `record` ends
/// with its copies; a keep-mode agent keeps its peak). Thread-safe: the recorder allocates, finalizers free.
/// </summary>
internal sealed unsafe class CopyHeap
{
    private const int ChunkShift = 21;
    private const int ChunkSize = 1 << ChunkShift;
    private const int MinShift = 12;
    private const int MaxShift = 20;

    /// <summary>The heap of every followed copy in the process.</summary>
    public static CopyHeap Shared { get; } = new();

    // Free blocks by size (index: shift - MinShift, the last a whole chunk): the set says which are free (a buddy's
    // merge takes one out of the middle), the stack which was freed last; an entry of the stack no longer in the set
    // (merged, or given since) is skipped when it comes up.
    private readonly HashSet<nint>[] _free = Enumerable.Range(0, ChunkShift - MinShift + 1).Select(_ => new HashSet<nint>()).ToArray();
    private readonly Stack<nint>[] _order = Enumerable.Range(0, ChunkShift - MinShift + 1).Select(_ => new Stack<nint>()).ToArray();
    private readonly Lock _gate = new();

    /// <summary>2 MiB chunks mapped so far (each one new memory).</summary>
    public int ChunksMapped { get; private set; }

    /// <summary>At least <paramref name="size"/> bytes (uninitialized); <paramref name="capacity"/> says how many.</summary>
    public byte* Allocate(long size, out long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        if (size > 1L << MaxShift)
        {
            capacity = (size + ChunkSize - 1) & ~(long)(ChunkSize - 1);
            return Map(capacity, populate: false); // a doubled capacity: its upper half may never be touched
        }

        var shift = Math.Max(MinShift, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)size - 1));
        capacity = 1L << shift;
        lock (_gate)
        {
            for (var s = shift; s <= ChunkShift; s++)
            {
                if (TakeFree(s, out var block))
                {
                    Split(block, s, shift);
                    return (byte*)block;
                }
            }
        }

        var chunk = Map(ChunkSize, populate: true);
        lock (_gate)
        {
            ChunksMapped++;
            Split((nint)chunk, ChunkShift, shift);
        }

        return chunk;
    }

    /// <summary>Gives back a block <see cref="Allocate"/> returned with this capacity.</summary>
    public void Free(byte* block, long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1L << MinShift);
        if (capacity > 1L << MaxShift)
        {
            _ = Libc.Munmap(block, (nuint)capacity);
            return;
        }

        var shift = System.Numerics.BitOperations.Log2((ulong)capacity);
        var at = (nint)block;
        lock (_gate)
        {
            // A block freed twice would merge into a parent already free and be given to two copies at once (two files'
            // bytes in one place): refused, whichever block of its line is free already.
            for (var k = shift; k <= ChunkShift; k++)
            {
                if (_free[k - MinShift].Contains(at & ~(nint)((1L << k) - 1)))
                {
                    throw new InvalidOperationException("a copy block was freed twice");
                }
            }

            // Chunks are 2 MiB aligned (HugePageMemory): a block's buddy differs from it in the one bit of its size.
            for (; shift < ChunkShift && _free[shift - MinShift].Remove(at ^ (nint)(1L << shift)); shift++)
            {
                at &= ~(nint)(1L << shift);
            }

            var free = _free[shift - MinShift];
            var order = _order[shift - MinShift];
            free.Add(at);
            order.Push(at);
            if (order.Count > (2 * free.Count) + 64)
            {
                Prune(order, free); // merges left it mostly stale entries (a keep-mode agent frees for days)
            }
        }
    }

    // The stack's entries still free, each once, in the same order.
    private static void Prune(Stack<nint> order, HashSet<nint> free)
    {
        var seen = new HashSet<nint>();
        var kept = new List<nint>(free.Count);
        foreach (var block in order) // the top first
        {
            if (free.Contains(block) && seen.Add(block))
            {
                kept.Add(block);
            }
        }

        order.Clear();
        for (var i = kept.Count - 1; i >= 0; i--)
        {
            order.Push(kept[i]);
        }
    }

    // Under the gate: the free block of this size freed last, taken.
    private bool TakeFree(int shift, out nint block)
    {
        var free = _free[shift - MinShift];
        var order = _order[shift - MinShift];
        while (order.TryPop(out block))
        {
            if (free.Remove(block))
            {
                return true;
            }
        }

        return false;
    }

    // Under the gate: the free block at `block` of size 2^from is cut down to 2^to (the block itself); the upper halves
    // cut off are free.
    private void Split(nint block, int from, int to)
    {
        for (var s = from - 1; s >= to; s--)
        {
            var half = block + (nint)(1L << s);
            _free[s - MinShift].Add(half);
            _order[s - MinShift].Push(half);
        }
    }

    private static byte* Map(long length, bool populate)
    {
        var p = HugePageMemory.Map((nuint)length, populate);
        return p != null ? p
            : throw new OutOfMemoryException($"cannot map {length} bytes for a followed copy (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
    }
}
