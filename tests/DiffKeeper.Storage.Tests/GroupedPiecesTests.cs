using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A big file's small pieces (the pages of a sparse image) are stored as slices of groups, one record per up to
/// 1 MiB of them, while whole blocks stay blobs of their own; every piece reads back by itself and verifies.
/// </summary>
public sealed class GroupedPiecesTests
{
    private const int Page = 4096;

    [Fact]
    public void Pages_of_a_sparse_image_become_slices_that_read_back_and_verify_over_versions()
    {
        using var dir = new TempDir();
        var random = new Random(7);
        var path = dir.Sub("image");
        long size = 64L << 20;
        var pages = new HashSet<long>();
        using (var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(file, size);
            for (var i = 0; i < 700; i++)
            {
                var at = random.NextInt64(size / BlockPiece.BlockSize) * BlockPiece.BlockSize + random.Next(1, 15) * Page; // scattered pages
                RandomAccess.Write(file, PageBytes(random, i), at);
                pages.Add(at);
            }

            RandomAccess.Write(file, Bytes(random, BlockPiece.BlockSize * 3), 5L * BlockPiece.BlockSize); // whole blocks stay whole
            RandomAccess.Write(file, PageBytes(random, 3), 10L << 20); // the same page again: the blob of the page of i = 3
        }

        var trace = dir.Sub("trace");
        var states = new List<byte[]>();
        long? parent = null;
        for (var v = 0; v <= 3; v++)
        {
            if (v > 0)
            {
                using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
                foreach (var at in pages.Where(_ => random.Next(50) == 0).ToList())
                {
                    RandomAccess.Write(file, PageBytes(random, 1000 * v + (int)(at / Page)), at);
                }
            }

            var taken = SnapshotWriter.Take(trace, [path], parent, diffInput: false, "test");
            Assert.InRange(taken.Files[0].PiecesChanged, v == 0 ? 600 : 1, v == 0 ? 720 : 40);
            parent = taken.Id;
            states.Add(File.ReadAllBytes(path));
        }

        CheckVersions(trace, states, firstIsGrouped: true);

        // A maintenance pass (compaction, grouping, repack) keeps every version whole and readable.
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        CheckVersions(trace, states, firstIsGrouped: false);
    }

    private static void CheckVersions(string trace, List<byte[]> states, bool firstIsGrouped)
    {
        using var r = TraceReader.Open(trace);
        var versions = r.AllVersions().Where(v => v.Kind == Core.EntryKind.File).OrderBy(v => v.Id).ToList();
        Assert.Equal(states.Count, versions.Count);
        for (var i = 0; i < versions.Count; i++)
        {
            Assert.True(states[i].AsSpan().SequenceEqual(TraceStoreTests.ReadBack(r, versions[i])), $"version {i}");
        }

        var blobs = r.AllBlobs().ToList();
        if (firstIsGrouped)
        {
            var groups = blobs.Where(b => b.Codec == BlobCodec.Group).ToList();
            Assert.InRange(groups.Count, 3, 12); // the first version's 700 pages in 1 MiB groups, then a group per later version
            Assert.All(groups, g => Assert.InRange(g.RawLength, 2 * Page, PackFormat.MaxGroupLength));
            Assert.InRange(blobs.Count(b => b.IsSlice), 600, 760); // a slice per distinct piece of pages
            Assert.Equal(3, blobs.Count(b => !b.IsSlice && b.Codec != BlobCodec.Group)); // the three whole blocks
        }

        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    /// <summary>A page: random bytes for most, a compressible pattern for some.</summary>
    private static byte[] PageBytes(Random random, int n) =>
        n % 3 == 0 ? [.. Enumerable.Range(0, Page).Select(i => (byte)(n + i / 64))] : Bytes(random, Page);

    private static byte[] Bytes(Random random, int length)
    {
        var b = new byte[length];
        random.NextBytes(b);
        return b;
    }
}
