namespace DiffKeeper.Recording.Tests;

/// <summary>
/// The followed copies' native memory: every size gets a block at least that big (a power of two up to 1 MiB, a
/// multiple of 2 MiB beyond), growing keeps the bytes below the used size, a freed block is the next one given for its
/// size (so an untar's copies reuse warm memory instead of faulting in new pages), and freed blocks merge with their
/// free buddies, so memory freed at one size serves another without a new chunk. Each test but the one of
/// <see cref="NativeBuffer"/> has a heap of its own; that one uses the process's, so these tests run alone.
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
        var heap = new CopyHeap();
        var block = heap.Allocate(size, out var capacity);
        try
        {
            Assert.Equal(expected, capacity);
            new Span<byte>(block, (int)capacity).Fill(0xA5);
            Assert.Equal(0xA5, block[capacity - 1]);
        }
        finally
        {
            heap.Free(block, capacity);
        }
    }

    // Allocations and frees mixed at random (seeded): blocks in use never overlap, each is aligned to its capacity
    // inside one 2 MiB chunk, and once all are free the chunks serve whole 1 MiB blocks again with no new mapping.
    // A split that handed out the same half twice passed the tests of one pattern each.
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Mixed_allocations_and_frees_never_overlap_and_merge_back_whole(int seed)
    {
        var heap = new CopyHeap();
        var r = new Random(seed);
        var used = new List<(nint At, long Capacity)>();
        for (var i = 0; i < 3000; i++)
        {
            if (used.Count > 0 && r.Next(3) == 0)
            {
                var k = r.Next(used.Count);
                heap.Free((byte*)used[k].At, used[k].Capacity);
                used.RemoveAt(k);
                continue;
            }

            var at = (nint)heap.Allocate(r.Next(1, 1 << 20), out var capacity);
            Assert.Equal(0, at & (nint)(capacity - 1));
            Assert.Equal(at >> 21, (at + (nint)capacity - 1) >> 21);
            Assert.DoesNotContain(used, u => at < u.At + u.Capacity && u.At < at + capacity);
            used.Add((at, capacity));
        }

        foreach (var (at, capacity) in used)
        {
            heap.Free((byte*)at, capacity);
        }

        var chunks = heap.ChunksMapped;
        var whole = new List<nint>();
        for (var i = 0; i < 2 * chunks; i++)
        {
            whole.Add((nint)heap.Allocate(1 << 20, out _));
        }

        Assert.Equal(chunks, heap.ChunksMapped);
        whole.ForEach(b => heap.Free((byte*)b, 1 << 20));
        Assert.Throws<InvalidOperationException>(() => heap.Free((byte*)whole[0], 1 << 20));
    }

    [Fact]
    public void A_freed_block_is_the_next_one_given_for_its_size()
    {
        var heap = new CopyHeap();
        var held = heap.Allocate(20_000, out _); // its buddy stays in use: the freed block cannot merge
        var first = heap.Allocate(20_000, out var capacity);
        heap.Free(first, capacity);
        var second = heap.Allocate(30_000, out var again);
        Assert.Equal(capacity, again);
        Assert.True(first == second);
        Assert.Equal(1, heap.ChunksMapped);
        heap.Free(second, again);
        heap.Free(held, capacity);
    }

    [Fact]
    public void Freed_blocks_merge_with_their_free_buddies_and_serve_another_size_without_a_new_chunk()
    {
        // Copies grow by doubling and the sizes in use drift through an untar: without merging, the chunk cut into
        // 64 KiB blocks could not give a 1 MiB one, and each such size mapped (and zeroed) chunks of its own.
        var heap = new CopyHeap();
        var small = new List<nint>();
        for (var i = 0; i < 32; i++)
        {
            small.Add((nint)heap.Allocate(64 << 10, out _));
        }

        Assert.Equal(1, heap.ChunksMapped);
        foreach (var block in small)
        {
            heap.Free((byte*)block, 64 << 10);
        }

        var a = heap.Allocate(1 << 20, out var capacity);
        var b = heap.Allocate(1 << 20, out _);
        Assert.Equal(1, heap.ChunksMapped);
        Assert.True(a != b);
        Assert.Contains((nint)a, small);
        Assert.Contains((nint)b, small);

        // Blocks of every size, freed in another order than given, still merge back into the whole chunk.
        heap.Free(a, capacity);
        heap.Free(b, capacity);
        var random = new Random(5);
        var mixed = new List<(nint Block, long Capacity)>();
        for (long used = 0; used < (1 << 20);)
        {
            var block = heap.Allocate(4096L << random.Next(6), out var given);
            mixed.Add(((nint)block, given));
            used += given;
        }

        foreach (var (block, given) in mixed.OrderBy(_ => random.Next()))
        {
            heap.Free((byte*)block, given);
        }

        var whole = heap.Allocate(1 << 20, out _);
        var other = heap.Allocate(1 << 20, out _);
        Assert.Equal(1, heap.ChunksMapped);
        heap.Free(whole, 1 << 20);
        heap.Free(other, 1 << 20);
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
