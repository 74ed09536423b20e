using DiffKeeper.Storage;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// A shadow stores each version from its own bytes, keeping the previous version's chunks over the unchanged
/// prefix. Whatever the sequence of writes and truncates, each stored version must be exactly what storing the
/// same bytes from scratch gives: the same extents, blobs and content id, and bytes that read back.
/// </summary>
public sealed class FileShadowTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Every_version_stored_incrementally_equals_the_same_bytes_stored_from_scratch(int seed)
    {
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"t{seed}"));
        var shadow = FileShadow.Empty();
        var truth = new List<byte>();
        for (var step = 0; step < 120; step++)
        {
            var roll = random.Next(100);
            if (roll < 70 || truth.Count == 0)
            {
                // Appends of tar-like and log-like sizes, sometimes random bytes, sometimes repetitive text.
                var bytes = new byte[random.Next(4) == 0 ? random.Next(1, 300_000) : random.Next(1, 12_000)];
                if (random.Next(2) == 0)
                {
                    random.NextBytes(bytes);
                }
                else
                {
                    bytes.AsSpan().Fill((byte)('a' + step % 26));
                }

                shadow.Write(truth.Count, bytes);
                truth.AddRange(bytes);
            }
            else if (roll < 88)
            {
                var offset = random.Next(truth.Count);
                var bytes = new byte[Math.Min(random.Next(1, 5000), truth.Count - offset + random.Next(0, 100))];
                random.NextBytes(bytes);
                shadow.Write(offset, bytes);
                while (truth.Count < offset + bytes.Length)
                {
                    truth.Add(0);
                }

                for (var i = 0; i < bytes.Length; i++)
                {
                    truth[offset + i] = bytes[i];
                }
            }
            else
            {
                var size = random.Next(truth.Count + 1);
                shadow.Truncate(size);
                truth.RemoveRange(size, truth.Count - size);
            }

            if (random.Next(3) == 0)
            {
                continue; // several changes between two stores
            }

            var incremental = shadow.Store(writer);
            var fromScratch = FileShadow.Of(truth.ToArray()).Store(writer);
            Assert.Equal(truth.Count, incremental.Size);
            Assert.Equal(fromScratch.ContentId, incremental.ContentId);
            Assert.Equal(fromScratch.Extents, incremental.Extents);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Zero_blocks_of_a_sparse_file_are_stored_as_holes_and_incremental_equals_from_scratch(int seed)
    {
        // Writes far past the end and truncates up (what `truncate -s 4M f; printf end >> f` does): the stored
        // extents must cover only the 4 KiB blocks that hold data, as a read with SEEK_DATA would.
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"s{seed}"));
        var shadow = FileShadow.Empty();
        var truth = new List<byte>();
        for (var step = 0; step < 60; step++)
        {
            if (random.Next(4) == 0)
            {
                var size = truth.Count + random.Next(0, 3 << 20);
                shadow.Truncate(size);
                truth.AddRange(new byte[size - truth.Count]);
            }
            else
            {
                var offset = random.Next(0, truth.Count + (1 << 20));
                var bytes = new byte[random.Next(1, 9000)];
                random.NextBytes(bytes);
                bytes[0] = 1;
                shadow.Write(offset, bytes);
                while (truth.Count < offset + bytes.Length)
                {
                    truth.Add(0);
                }

                bytes.CopyTo(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(truth)[offset..]);
            }

            var incremental = shadow.Store(writer);
            var fromScratch = FileShadow.Of(truth.ToArray()).Store(writer);
            Assert.Equal(fromScratch.ContentId, incremental.ContentId);
            Assert.Equal(fromScratch.Extents, incremental.Extents);
            Assert.True(ExtentMap.TryDecode(incremental.Extents, truth.Count, out var extents));
            var data = truth.ToArray();
            for (var block = 0L; block < data.Length; block += 4096)
            {
                var length = (int)Math.Min(4096, data.Length - block);
                var covered = extents.Any(e => e.Offset < block + length && block < e.Offset + e.Length);
                var zero = !data.AsSpan((int)block, length).ContainsAnyExcept((byte)0);
                Assert.True(zero ? !covered : covered, $"block at {block}: data {!zero}, stored {covered}");
            }
        }
    }
}
