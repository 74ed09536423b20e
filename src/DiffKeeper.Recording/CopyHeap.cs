using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording;

/// <summary>
/// The native memory of followed copies (<see cref="NativeBuffer"/>): blocks of a power of two from 4 KiB to 1 MiB cut
/// from 2 MiB chunks, each chunk one transparent huge page where the kernel gives one (<c>MADV_HUGEPAGE</c>) and
/// populated in one call where it does not (<c>MADV_POPULATE_WRITE</c>); a larger copy is a mapping of its own, advised
/// the same way but not populated (a capacity doubled ahead of the size may never be touched). glibc's malloc gave an
/// untar's ~130 MB of copies fresh heap pages one fault at a time (~40,000 faults at ~7–25 µs each on this VM, a trap
/// to the hypervisor, on the recorder's thread). A freed block goes to its size's free list and is used again; chunks
/// are never unmapped (a `record` ends with its copies; a keep-mode agent keeps its peak). Thread-safe: the recorder
/// allocates, finalizers free.
/// </summary>
internal static unsafe class CopyHeap
{
    private const int ChunkSize = 2 << 20;
    private const int MinShift = 12;
    private const int MaxShift = 20;
    private static readonly Stack<nint>[] FreeBlocks = Enumerable.Range(0, MaxShift - MinShift + 1).Select(_ => new Stack<nint>()).ToArray();
    private static readonly Lock Gate = new();

    /// <summary>At least <paramref name="size"/> bytes (uninitialized); <paramref name="capacity"/> says how many.</summary>
    public static byte* Allocate(long size, out long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        if (size > 1L << MaxShift)
        {
            capacity = (size + ChunkSize - 1) & ~(long)(ChunkSize - 1);
            return Map(capacity, populate: false); // a doubled capacity: its upper half may never be touched
        }

        var shift = Math.Max(MinShift, 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)size - 1));
        capacity = 1L << shift;
        var free = FreeBlocks[shift - MinShift];
        lock (Gate)
        {
            if (free.TryPop(out var block))
            {
                return (byte*)block;
            }
        }

        var chunk = Map(ChunkSize, populate: true);
        lock (Gate)
        {
            for (var at = ChunkSize - capacity; at > 0; at -= capacity)
            {
                free.Push((nint)(chunk + at));
            }
        }

        return chunk;
    }

    /// <summary>Gives back a block <see cref="Allocate"/> returned with this capacity.</summary>
    public static void Free(byte* block, long capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1L << MinShift);
        if (capacity > 1L << MaxShift)
        {
            _ = Libc.Munmap(block, (nuint)capacity);
            return;
        }

        var shift = System.Numerics.BitOperations.Log2((ulong)capacity);
        lock (Gate)
        {
            FreeBlocks[shift - MinShift].Push((nint)block);
        }
    }

    private static byte* Map(long length, bool populate)
    {
        var p = HugePageMemory.Map((nuint)length, populate);
        return p != null ? p
            : throw new OutOfMemoryException($"cannot map {length} bytes for a followed copy (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
    }
}
