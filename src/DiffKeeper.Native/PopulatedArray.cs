using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Large byte arrays whose pages are mapped when the array is made, in one madvise(MADV_POPULATE_WRITE) call,
/// instead of one page fault each as they are first written. On this project's VMs a fault is a trap to the
/// hypervisor (~35 µs quiet) and a page populated in one call ~1–1.5 µs (docs/benchmarks.md, "the floor is page
/// faults"), so a 1 MiB buffer costs ~0.3 ms instead of ~9 ms. For buffers one thread reuses many times (an
/// export worker's group); an array of less than a page populates nothing. Before Linux 5.14 the call fails and
/// the pages fault in as they are touched, as without it.
/// </summary>
public static unsafe class PopulatedArray
{
    private const int PageSize = 4096;

    /// <summary>An uninitialized array of <paramref name="length"/> bytes, its whole pages populated.</summary>
    public static byte[] Allocate(int length)
    {
        var bytes = GC.AllocateUninitializedArray<byte>(length);
        fixed (byte* p = bytes)
        {
            var start = ((nuint)p + PageSize - 1) & ~(nuint)(PageSize - 1);
            var end = ((nuint)p + (nuint)length) & ~(nuint)(PageSize - 1);
            if (end > start)
            {
                _ = Libc.Madvise((void*)start, end - start, Libc.MADV_POPULATE_WRITE);
            }
        }

        return bytes;
    }
}
