using System.Runtime.InteropServices;
using DiffKeeper.Native;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// An export worker's group buffers are <see cref="PopulatedArray"/>s: their pages are mapped when the array is made,
/// so writing them faults no page, where writing a fresh mapping of the same size faults once a page (the
/// measurement works). Counted with this thread's minor faults, on the real kernel (as <see cref="HeapPrefaultTests"/>).
/// </summary>
public sealed unsafe class PopulatedArrayTests
{
    private const int Size = 8 << 20; // 2,048 pages

    [Fact]
    public void The_pages_of_an_array_are_mapped_before_it_is_written()
    {
        HeapPrefaultTests.SkipWithoutPopulate();
        var fresh = (byte*)NativeMemory.Alloc(40 << 20); // above glibc's largest mmap threshold: a fresh mapping
        var control = FaultsWriting(new Span<byte>(fresh, Size));
        NativeMemory.Free(fresh);

        var array = PopulatedArray.Allocate(Size);
        var populated = FaultsWriting(array);

        Assert.True(control > Size / 4096 / 2, $"writing {Size >> 20} MiB of a fresh mapping faulted {control} times: the count does not measure page faults");
        Assert.True(populated < Size / 4096 / 10, $"writing a populated array of {Size >> 20} MiB faulted {populated} times ({control} for a fresh mapping)");
    }

    private static long FaultsWriting(Span<byte> bytes)
    {
        var before = HeapPrefaultTests.MinorFaults();
        for (var i = 0; i < bytes.Length; i += 4096)
        {
            bytes[i] = 1;
        }

        return HeapPrefaultTests.MinorFaults() - before;
    }
}
