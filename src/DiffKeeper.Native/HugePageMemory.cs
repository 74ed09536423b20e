using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Anonymous memory aligned to 2 MiB, so every whole 2 MiB of it can be one transparent huge page (THP in
/// <c>madvise</c> mode): the eBPF reader's payload slabs and the recorder's followed copies. On these VMs a fresh
/// 4 KiB page is a hypervisor trap (~25 µs); a huge page, or one populating call, is one.
/// </summary>
public static unsafe class HugePageMemory
{
    public const int Alignment = 2 << 20;

    /// <summary>
    /// <paramref name="length"/> bytes at a 2 MiB boundary (mapped 2 MiB larger, the ends cut off), advised for huge
    /// pages, and populated when asked (<c>MADV_POPULATE_WRITE</c>; before Linux 5.14 it faults in as it is touched).
    /// Null when nothing could be mapped. Give it back with <see cref="Libc.Munmap"/>.
    /// </summary>
    public static byte* Map(nuint length, bool populate)
    {
        var raw = (byte*)Libc.Mmap(null, length + Alignment, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
        if (raw == (byte*)-1)
        {
            return null;
        }

        var start = (byte*)(((nuint)raw + Alignment - 1) & ~(nuint)(Alignment - 1));
        if (start > raw)
        {
            _ = Libc.Munmap(raw, (nuint)(start - raw));
        }

        var end = raw + length + Alignment;
        if (end > start + length)
        {
            _ = Libc.Munmap(start + length, (nuint)(end - (start + length)));
        }

        _ = Libc.Madvise(start, length, Libc.MADV_HUGEPAGE); // EINVAL without THP: 4 KiB pages
        if (populate)
        {
            _ = Libc.Madvise(start, length, Libc.MADV_POPULATE_WRITE);
        }

        return start;
    }
}
