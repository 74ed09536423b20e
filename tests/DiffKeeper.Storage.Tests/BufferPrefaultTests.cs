using System.Globalization;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// <see cref="BufferPrefault"/> maps a fresh buffer's pages in one call, so writing it takes no page fault per page;
/// <see cref="BufferPrefault.Once"/> does that once per array and length. Counted with this thread's minor faults
/// (/proc/thread-self/stat) on the real kernel, outside the populating call: the kernel counts the pages a populate
/// maps as minor faults of the thread too (they are not traps, and `perf`'s page-fault event leaves them out). Each test
/// first shows that touching the same kind of memory unpopulated faults once a page (else the count proves nothing,
/// and the test says so). Run alone: the counts are the thread's, and a collection run on it counts its own memory.
/// </summary>
[Collection(nameof(BufferPrefaultTests))]
[CollectionDefinition(nameof(BufferPrefaultTests), DisableParallelization = true)]
public sealed unsafe class BufferPrefaultTests
{
    private const int Pages = 512;
    private const int Size = Pages * 4096;

    [Fact]
    public void A_populated_buffer_is_written_without_a_fault_per_page()
    {
        SkipWithoutPopulate();
        var array = GC.AllocateUninitializedArray<byte>(2 * Size + 4096);
        var control = Drop(array, 0, Size) + FaultsWriting(array, 0, Size);
        Drop(array, Size, Size);
        Assert.True(BufferPrefault.Populate(array.AsSpan(Size, Size)));
        var populated = FaultsWriting(array, Size, Size);

        Assert.True(control > Pages / 2, $"writing {Pages} dropped pages faulted {control} times: the count does not measure page faults");
        Assert.True(populated < Pages / 10, $"writing {Pages} populated pages faulted {populated} times ({control} unpopulated)");
    }

    [Fact]
    public void Once_populates_an_array_once_for_each_longer_prefix()
    {
        SkipWithoutPopulate();
        var array = GC.AllocateUninitializedArray<byte>(2 * Size);
        BufferPrefault.Once(array, Size);
        Drop(array, 0, 2 * Size);

        // The same prefix again: already done, so the dropped pages stay dropped and fault as they are written.
        BufferPrefault.Once(array, Size);
        var again = FaultsWriting(array, 0, Size);
        Drop(array, 0, 2 * Size);

        // A longer prefix: populated.
        BufferPrefault.Once(array, 2 * Size);
        var longer = FaultsWriting(array, Size, Size);

        Assert.True(again > Pages / 2, $"writing {Pages} dropped pages faulted {again} times: Once populated the same prefix twice, or the count does not measure faults");
        Assert.True(longer < Pages / 10, $"a longer prefix was not populated: {longer} faults writing {Pages} pages");
    }

    /// <summary>Gives the kernel the pages of array[offset..offset+length) back (they read as zeros and fault when written); returns 0.</summary>
    private static long Drop(byte[] array, int offset, int length)
    {
        fixed (byte* p = array)
        {
            var start = ((nuint)(p + offset) + 4095) & ~(nuint)4095;
            var end = (nuint)(p + offset + length) & ~(nuint)4095;
            Assert.Equal(0, Libc.Madvise((void*)start, end - start, MadvDontneed));
        }

        return 0;
    }

    private static long FaultsWriting(byte[] array, int offset, int length)
    {
        var before = MinorFaults();
        for (var i = offset; i < offset + length; i += 4096)
        {
            array[i] = 1;
        }

        return MinorFaults() - before;
    }

    private const int MadvDontneed = 4;

    private static void SkipWithoutPopulate()
    {
        if (Environment.OSVersion.Version < new Version(5, 14))
        {
            Assert.Skip($"MADV_POPULATE_WRITE needs Linux 5.14; this kernel is {Environment.OSVersion.Version}");
        }
    }

    // Field 10 of /proc/thread-self/stat (minflt), counted after the command name's closing parenthesis.
    private static long MinorFaults()
    {
        var stat = File.ReadAllText("/proc/thread-self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[7], CultureInfo.InvariantCulture);
    }
}
