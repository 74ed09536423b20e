using System.Globalization;
using System.Runtime.InteropServices;
using DiffKeeper.Native;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// <c>materialize</c>'s working memory (<see cref="PopulatedMemory"/>) must be mapped when it is handed out: touching
/// it costs no page fault per page, where touching a fresh block of the same size from malloc faults once a page (the
/// control, which proves the count counts). Blocks of 40 MiB are above glibc's largest mmap threshold, so both are
/// fresh mappings whatever this process freed before. Counted with this thread's minor faults, on the real kernel.
/// </summary>
public sealed unsafe class PopulatedMemoryTests
{
    private const int Size = 40 << 20; // 10,240 pages

    [Fact]
    public void Its_pages_are_mapped_before_they_are_touched()
    {
        if (Environment.OSVersion.Version < new Version(5, 14))
        {
            Assert.Skip($"MADV_POPULATE_WRITE needs Linux 5.14; this kernel is {Environment.OSVersion.Version}");
        }

        const string thp = "/sys/kernel/mm/transparent_hugepage/enabled";
        if (File.Exists(thp) && File.ReadAllText(thp).Contains("[always]", StringComparison.Ordinal))
        {
            // The control would fault once per 2 MiB huge page, not per page: the count could not tell the two apart.
            Assert.Skip($"transparent huge pages are [always] ({thp}): fresh memory faults once per 2 MiB, so the control proves nothing");
        }

        var control = (byte*)NativeMemory.Alloc(Size);
        var controlFaults = Touch(control);
        NativeMemory.Free(control);

        var populated = (byte*)PopulatedMemory.Alloc(Size);
        var populatedFaults = Touch(populated);
        PopulatedMemory.Free(populated);

        Assert.True(controlFaults > Size / 4096 / 2, $"touching {Size >> 20} MiB of fresh malloc memory faulted {controlFaults} times: the count does not measure page faults");
        Assert.True(populatedFaults < Size / 4096 / 10, $"touching {Size >> 20} MiB of populated memory faulted {populatedFaults} times ({controlFaults} for fresh memory)");
    }

    [Fact]
    public void A_block_of_a_few_bytes_is_usable()
    {
        var block = (byte*)PopulatedMemory.Alloc(3);
        block[0] = 1;
        block[2] = 3;
        Assert.Equal(4, block[0] + block[2]);
        PopulatedMemory.Free(block);
    }

    private static long Touch(byte* block)
    {
        var before = MinorFaults();
        for (var i = 0; i < Size; i += 4096)
        {
            block[i] = 1;
        }

        return MinorFaults() - before;
    }

    // Field 10 of /proc/thread-self/stat (minflt), counted after the command name's closing parenthesis.
    private static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture);
    }
}
