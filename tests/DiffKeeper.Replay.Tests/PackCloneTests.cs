using DiffKeeper.Native.Interop;
using DiffKeeper.Replay.BigFiles;
using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Replay.Tests;

/// <summary>
/// A materialization beside the parent shares the changed blocks that lie raw and aligned in the store's pack
/// (FICLONERANGE) when the store is on the output's file system: the file equals, byte for byte and hole for hole, the
/// file the snapshot was taken of and the one the decode path writes; where the pack is on another file system (EXDEV)
/// the blocks are written instead and the reason is said once; a store written before aligned groups materializes the
/// same by writing.
/// </summary>
public sealed class PackCloneTests
{
    private const int Block = BlockPiece.BlockSize;

    [Theory]
    [InlineData("xfs", "same", true)]
    [InlineData("btrfs", "same", true)]
    [InlineData("xfs", "other", true)] // the store on /tmp's file system: EXDEV
    [InlineData("xfs", "same", false)] // a store written before aligned groups
    public void Changed_blocks_are_cloned_from_the_pack_and_the_file_equals_the_decoded_one(string fileSystem, string storeOn, bool align)
    {
        using var mount = LoopMount.TryCreate(fileSystem, out var why) ?? Skip(why);
        using var dir = new TempDir(mount.Path);
        using var elsewhere = new TempDir();
        var random = new Random(fileSystem.Length + (align ? 1 : 0) + storeOn.Length);
        var live = dir.Sub("ckpt.bin");
        var store = storeOn == "same" ? dir.Sub("store") : elsewhere.Sub("store");
        var size = 96L * Block;
        using (var f = File.OpenHandle(live, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.SetLength(f, size);
            RandomAccess.Write(f, Fp32(random, 80 * Block), 0); // the last 16 blocks a hole
        }

        long? parent = null;
        string? previous = null;
        for (var v = 0; v < 4; v++)
        {
            if (v > 0)
            {
                using var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite);
                foreach (var k in Enumerable.Range(0, 90).OrderBy(_ => random.Next()).Take(7 + (v * 5)))
                {
                    RandomAccess.Write(f, Fp32(random, Block), (long)k * Block);
                }

                // Four adjacent blocks: runs adjacent in the file and in the pack are cloned at once.
                RandomAccess.Write(f, Fp32(random, 4 * Block), (20L + v) * Block);

                // A punched hole and a partial block: written or punched, never cloned.
                Assert.Equal(0, Libc.Fallocate((int)f.DangerousGetHandle(), Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE,
                    random.Next(0, 80) * (long)Block, 3 * 4096));
                RandomAccess.Write(f, Fp32(random, 3000), (random.Next(0, 80) * (long)Block) + 700);
                RandomAccess.FlushToDisk(f);
            }

            var taken = SnapshotWriter.Take(store, [live], parent, diffInput: false, "snapshot (test)", alignChanged: align);
            var output = dir.Sub("out" + (v % 2));
            MaterializeResult result;
            using (var reader = TraceReader.Open(store))
            {
                result = SnapshotMaterializer.Materialize(reader, taken.Id, output, previous);
            }

            var outFile = Path.Combine(output, "ckpt.bin");
            BigFileRoundTripTests.AssertSameFile(live, outFile, $"{fileSystem}, store on {storeOn}, version {v}");
            if (previous is not null)
            {
                var file = Assert.Single(result.Files);
                Assert.True(file.Cloned, "the parent's materialization is cloned");
                if (align && storeOn == "same")
                {
                    Assert.True(file.BytesCloned >= 7L * Block, $"version {v}: {file.BytesCloned} bytes shared with the store");
                    Assert.Null(result.BlockCopyReason);
                }
                else
                {
                    Assert.Equal(0, file.BytesCloned);
                    Assert.True(file.BytesWritten >= 7L * Block);
                    if (align)
                    {
                        Assert.Contains("another file system", result.BlockCopyReason, StringComparison.Ordinal);
                    }
                    else
                    {
                        Assert.Null(result.BlockCopyReason); // nothing lies aligned in the pack: no clone is tried
                    }
                }

                Assert.True(LoopMount.HasSharedExtents(outFile));

                // The decode path (no base: every extent read from the store and written) gives the same file.
                var decoded = dir.Sub("decoded" + v);
                using (var reader = TraceReader.Open(store))
                {
                    SnapshotMaterializer.Materialize(reader, taken.Id, decoded, baseDir: null);
                }

                BigFileRoundTripTests.AssertSameFile(Path.Combine(decoded, "ckpt.bin"), outFile, $"version {v}: cloned against decoded");
            }

            parent = taken.Id;
            previous = output;
        }
    }

    private static LoopMount Skip(string why)
    {
        Assert.Skip(why);
        return null!;
    }

    /// <summary>float32 values with random mantissas and magnitudes in [2^-7, 2^-3), as W4's: zstd saves ~9%.</summary>
    private static byte[] Fp32(Random random, int length)
    {
        var b = new byte[length];
        random.NextBytes(b);
        ReadOnlySpan<byte> high = [0x3C, 0x3D, 0xBC, 0xBD];
        for (var i = 3; i < length; i += 4)
        {
            b[i] = high[b[i] & 3];
        }

        return b;
    }
}
