namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The followed copies' native memory: every size gets a block at least that big (a power of two up to 1 MiB, a
/// multiple of 2 MiB beyond), growing keeps the bytes below the used size, and a freed block is the next one given
/// for its size (so an untar's copies reuse warm memory instead of faulting in new pages). The heap is one per
/// process: these tests run alone, so no other test's copies take the block freed between two steps.
/// </summary>
[Collection(nameof(CopyHeapTests))]
[CollectionDefinition(nameof(CopyHeapTests), DisableParallelization = true)]
public sealed unsafe class CopyHeapTests
{
    [Theory]
    [InlineData(1L, 4096L)]
    [InlineData(4096L, 4096L)]
    [InlineData(4097L, 8192L)]
    [InlineData(10_240L, 16_384L)]
    [InlineData(1L << 20, 1L << 20)]
    [InlineData((1L << 20) + 1, 2L << 20)]
    [InlineData((5L << 20) + 7, 6L << 20)]
    public void A_block_is_at_least_the_size_asked_for_and_all_of_it_is_writable(long size, long expected)
    {
        var block = CopyHeap.Allocate(size, out var capacity);
        try
        {
            Assert.Equal(expected, capacity);
            new Span<byte>(block, (int)capacity).Fill(0xA5);
            Assert.Equal(0xA5, block[capacity - 1]);
        }
        finally
        {
            CopyHeap.Free(block, capacity);
        }
    }

    [Fact]
    public void A_freed_block_is_the_next_one_given_for_its_size()
    {
        // Buffers other tests left are given back by the finalizer thread: done before, not between Free and Allocate.
        GC.Collect();
        GC.WaitForPendingFinalizers();
        var first = CopyHeap.Allocate(20_000, out var capacity);
        CopyHeap.Free(first, capacity);
        var second = CopyHeap.Allocate(30_000, out var again);
        try
        {
            Assert.Equal(capacity, again);
            Assert.True(first == second);
        }
        finally
        {
            CopyHeap.Free(second, again);
        }
    }

    [Fact]
    public void Growing_a_buffer_keeps_its_used_bytes_across_every_size_class()
    {
        var buffer = new NativeBuffer(100);
        var truth = new byte[3 << 20];
        new Random(7).NextBytes(truth);
        long used = 0;
        while (used < truth.Length)
        {
            var next = Math.Min(truth.Length, (used * 2) + 1000);
            buffer.Grow(next, used);
            Assert.True(buffer.Capacity >= next);
            truth.AsSpan((int)used, (int)(next - used)).CopyTo(new Span<byte>(buffer.Pointer + used, (int)(next - used)));
            used = next;
            Assert.True(new ReadOnlySpan<byte>(buffer.Pointer, (int)used).SequenceEqual(truth.AsSpan(0, (int)used)));
        }
    }
}
