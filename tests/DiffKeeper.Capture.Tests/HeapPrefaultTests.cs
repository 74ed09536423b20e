using System.Globalization;
using System.Runtime.InteropServices;
using DiffKeeper.Native;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// The eBPF backend's start populates the heap libbpf is about to fill with the kernel's BTF
/// (<see cref="HeapPrefault"/>): memory malloc hands out inside the reservation must already be mapped (no page
/// fault per page), where touching a fresh mapping of the same size faults once a page (the measurement works).
/// Counted with this thread's minor faults (/proc/thread-self/stat), on the real kernel and glibc.
/// </summary>
public sealed unsafe class HeapPrefaultTests
{
    private const int Size = 8 << 20; // 2,048 pages

    [Fact]
    public void Memory_malloc_hands_out_inside_a_reservation_is_already_mapped()
    {
        SkipWithoutPopulate();
        // The control: a block above glibc's largest mmap threshold is always a fresh mapping, so touching 8 MiB of
        // it faults once a page (proves the count counts). The earlier frees of this process decide where a smaller
        // block outside a reservation comes from, so it would be no control.
        var control = FaultsOfFreshBlock(40 << 20);
        long inside;
        using (HeapPrefault.Reserve(Size + (1 << 20)))
        {
            inside = FaultsOfFreshBlock(Size);
        }

        Assert.True(control > Size / 4096 / 2, $"touching {Size >> 20} MiB of a fresh mapping faulted {control} times: the count does not measure page faults");
        Assert.True(inside < Size / 4096 / 10, $"a block of {Size >> 20} MiB inside a reservation faulted {inside} times ({control} for a fresh mapping): the reservation was not reused");
    }

    private static long FaultsOfFreshBlock(int blockSize)
    {
        var before = MinorFaults();
        var block = (byte*)NativeMemory.Alloc((nuint)blockSize);
        for (var i = 0; i < Size; i += 4096)
        {
            block[i] = 1;
        }

        var faults = MinorFaults() - before;
        NativeMemory.Free(block);
        return faults;
    }

    internal static void SkipWithoutPopulate()
    {
        if (Environment.OSVersion.Version < new Version(5, 14))
        {
            Assert.Skip($"MADV_POPULATE_WRITE needs Linux 5.14; this kernel is {Environment.OSVersion.Version}");
        }
    }

    // Field 10 of /proc/thread-self/stat (minflt), counted after the command name's closing parenthesis.
    internal static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture);
    }
}
