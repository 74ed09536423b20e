using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Native memory whose pages are mapped before it is used: malloc, then one madvise(MADV_POPULATE_WRITE) over its
/// whole pages. A fresh page touched for the first time is a page fault, a hypervisor trap on this project's VMs
/// (~15–35 µs); populated in one call it costs ~1 µs (docs/benchmarks.md, "mat16"). For working memory of a few
/// hundred KiB that a short command fills at once and frees (the managed heap's fresh pages cannot be populated ahead:
/// the GC commits them as it goes). Before Linux 5.14 the madvise fails and the pages fault in as they are touched.
/// </summary>
public static unsafe class PopulatedMemory
{
    /// <summary><paramref name="bytes"/> (at least 1) of uninitialized memory, its pages populated; give it back with <see cref="Free"/>.</summary>
    public static void* Alloc(nuint bytes)
    {
        var block = NativeMemory.Alloc(Math.Max(bytes, 1));
        var start = ((nuint)block + 4095) & ~(nuint)4095;
        var end = ((nuint)block + bytes) & ~(nuint)4095;
        if (end > start)
        {
            _ = Libc.Madvise((void*)start, end - start, Libc.MADV_POPULATE_WRITE);
        }

        return block;
    }

    public static void Free(void* block) => NativeMemory.Free(block);
}
