using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Makes the large malloc calls a native library is about to make land on pages that are already mapped, mapped in
/// one madvise(MADV_POPULATE_WRITE) call instead of one page fault each. On a machine whose page faults are traps
/// to the hypervisor (this project's CI VM: ~35 µs a fault, ~1–1.5 µs a page populated in one call,
/// docs/benchmarks.md "the floor is page faults") that is most of the cost of touching fresh memory.
/// The one user is the eBPF backend's start: libbpf reads the kernel's BTF (5.4 MB here) into a fresh heap buffer
/// and copies it into another, ~2,700 faults, at every `record --capture ebpf`.
/// Only glibc's malloc is steered (mallopt); with another allocator the calls fail and nothing changes.
/// Process-wide and not thread-safe against other users of mallopt (there are none).
/// </summary>
public static unsafe class HeapPrefault
{
    // Below this size malloc serves from the heap, not from a mapping of its own per allocation (which would be
    // fresh pages again). 32 MiB is the highest value glibc's own dynamic threshold ever reaches.
    private const int MmapThreshold = 32 << 20;

    // Afterwards: about where glibc's dynamic thresholds stood once libbpf had freed its BTF buffers (a freed
    // mapping of N bytes raises the mmap threshold to N and the trim threshold to 2N), so the rest of the process
    // allocates as it did before. Setting them by hand stops glibc from moving them again.
    private const int MmapThresholdAfter = 8 << 20;
    private const int TrimThresholdAfter = 16 << 20;

    /// <summary>
    /// Puts <paramref name="bytes"/> of populated memory at the disposal of this thread's malloc arena until
    /// <see cref="Scope.Dispose"/>, which gives what is left free back to the kernel.
    /// </summary>
    public static Scope Reserve(nuint bytes)
    {
        // Freed memory stays in the heap (not trimmed) until the scope ends, so the next allocations reuse it.
        if (Libc.Mallopt(Libc.M_MMAP_THRESHOLD, MmapThreshold) == 0 || Libc.Mallopt(Libc.M_TRIM_THRESHOLD, 2 * MmapThreshold) == 0)
        {
            return new Scope(false);
        }

        var block = NativeMemory.Alloc(bytes); // malloc: the same arena libbpf's malloc calls on this thread use
        var start = ((nuint)block + 4095) & ~(nuint)4095;
        var end = ((nuint)block + bytes) & ~(nuint)4095;
        if (end > start)
        {
            _ = Libc.Madvise((void*)start, end - start, Libc.MADV_POPULATE_WRITE); // before Linux 5.14: EINVAL, faults as before
        }

        NativeMemory.Free(block);
        return new Scope(true);
    }

    public readonly struct Scope(bool active) : IDisposable
    {
        public void Dispose()
        {
            if (!active)
            {
                return;
            }

            _ = Libc.Mallopt(Libc.M_MMAP_THRESHOLD, MmapThresholdAfter);
            _ = Libc.Mallopt(Libc.M_TRIM_THRESHOLD, TrimThresholdAfter);
            _ = Libc.MallocTrim(0); // give the kernel what the reservation left unused

        }
    }
}
