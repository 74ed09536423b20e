using DiffKeeper.Core;
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
        using var mount = LoopMount.CreateOrSkip(fileSystem);
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
        var hole = Enumerable.Range(80, 16).Select(k => (long)k).ToHashSet();
        for (var v = 0; v < 4; v++)
        {
            // The blocks this version rewrites whole, that held data before, and that nothing touches after: each of
            // them must be cloned (22 and more in the last versions: every lane of the 16-lane check, not only the
            // first 8, must pass them).
            var whole = new HashSet<long>();
            if (v > 0)
            {
                using var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite);
                foreach (var k in Enumerable.Range(0, 90).OrderBy(_ => random.Next()).Take(7 + (v * 5)))
                {
                    RandomAccess.Write(f, Fp32(random, Block), (long)k * Block);
                    if (!hole.Contains(k))
                    {
                        whole.Add(k); // a block that was a hole is a new block, stored as any (BlockIngest aligns only changed ones)
                    }

                    hole.Remove(k);
                }

                // Four adjacent blocks: runs adjacent in the file and in the pack are cloned at once.
                RandomAccess.Write(f, Fp32(random, 4 * Block), (20L + v) * Block);
                whole.UnionWith(Enumerable.Range(20 + v, 4).Select(k => (long)k));

                // A punched hole and a partial block: written or punched, never cloned.
                var punched = random.Next(0, 80);
                Assert.Equal(0, Libc.Fallocate((int)f.DangerousGetHandle(), Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE,
                    punched * (long)Block, 3 * 4096));
                var partial = random.Next(0, 80);
                RandomAccess.Write(f, Fp32(random, 3000), (partial * (long)Block) + 700);
                RandomAccess.FlushToDisk(f);
                whole.Remove(punched);
                whole.Remove(partial);
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
                    Assert.True(file.BytesCloned >= whole.Count * (long)Block,
                        $"version {v}: {file.BytesCloned} bytes shared with the store, {whole.Count} whole blocks rewritten");
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

    /// <summary>
    /// A byte of a changed block flipped in the pack where it lies raw and aligned: the block is not cloned (it does not
    /// hash to its id there), the ordinary read names the damage (exit 5), and nothing is published or left behind.
    /// Without the check the clone would share the damaged bytes into the output silently.
    /// </summary>
    /// <remarks>
    /// The second case changes 150 blocks apart from one another (9.4 MiB of runs: two slices, one on a thread of its
    /// own) and damages the 126th: a lane above the eighth of the 16-lane check, in the second slice.
    /// </remarks>
    [Theory]
    [InlineData(32, 1, 4, 11)]
    [InlineData(300, 2, 150, 250)]
    public void A_damaged_aligned_block_in_the_pack_is_named_and_nothing_is_published(int blocks, int step, int changedCount, int damaged)
    {
        using var mount = LoopMount.CreateOrSkip("xfs");
        using var dir = new TempDir(mount.Path);
        var random = new Random(15);
        var live = dir.Sub("ckpt.bin");
        var v0 = Fp32(random, blocks * Block);
        File.WriteAllBytes(live, v0);
        var store = dir.Sub("store");
        var first = SnapshotWriter.Take(store, [live], null, diffInput: false, "snapshot (test)", alignChanged: true);
        var changed = blocks == 32 ? [3, 10, 11, 20] : Enumerable.Range(0, changedCount).Select(i => i * step).ToArray();
        Assert.Contains(damaged, changed);
        using (var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite))
        {
            foreach (var k in changed)
            {
                RandomAccess.Write(f, Fp32(random, Block), (long)k * Block);
            }
        }

        var second = SnapshotWriter.Take(store, [live], first.Id, diffInput: false, "snapshot (test)", alignChanged: true);
        var parent = dir.Sub("out0");
        long at;
        using (var reader = TraceReader.Open(store))
        {
            SnapshotMaterializer.Materialize(reader, first.Id, parent, null);
            var version = reader.StateAt(reader.Session(second.Id), long.MaxValue).Single();
            Assert.True(ExtentMap.TryDecode(version.Extents, version.Size, out var extents));
            var slice = reader.Blob(extents.Single(e => e.Offset == (long)damaged * Block).BlobRowId);
            var group = reader.Blob(slice.Bases.Single());
            at = AlignedGroupFrame.RawOffset(store, group, slice) ?? throw new InvalidOperationException($"block {damaged} does not lie raw in its group");
            Assert.Equal(0, at % 4096);
            using var pack = File.OpenHandle(Path.Combine(store, Storage.Packs.PackFormat.RelativePath(group.PackId)), FileMode.Open, FileAccess.ReadWrite);
            var b = new byte[1];
            RandomAccess.Read(pack, b, at + 1000);
            b[0] ^= 0x40;
            RandomAccess.Write(pack, b, at + 1000);
        }

        var output = dir.Sub("out1");
        using (var reader = TraceReader.Open(store))
        {
            var e = Assert.Throws<DiffKeeperException>(() => SnapshotMaterializer.Materialize(reader, second.Id, output, parent));
            Assert.Equal(ExitCode.Corrupt, e.Code);
            Assert.Contains("ckpt.bin", e.Message, StringComparison.Ordinal);
        }

        Assert.False(Directory.Exists(output), "a damaged version was published");
        Assert.Empty(Directory.GetDirectories(dir.Path, ".out1*"));
        Assert.True(v0.AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(parent, "ckpt.bin"))), "the parent was changed");
    }

    /// <summary>
    /// An aligned group of one member whose record lands with no leading padding has raw bytes equal to its member's, so
    /// the writer ends it with 16 random trailer bytes (docs/store-format.md, "Aligned groups"): its member is found in
    /// the frame and cloned like any other, and the file equals the one snapshotted. The tail's length moves the
    /// group's record until it lands there.
    /// </summary>
    [Fact]
    public void A_member_of_an_aligned_group_with_a_trailer_is_cloned_and_the_file_equals()
    {
        using var mount = LoopMount.CreateOrSkip("xfs");
        using var dir = new TempDir(mount.Path);
        var tail = 1000;
        for (var attempt = 0; attempt < 8; attempt++)
        {
            var random = new Random(attempt);
            var live = dir.Sub($"try{attempt}/ckpt.bin");
            Directory.CreateDirectory(Path.GetDirectoryName(live)!);
            var bytes = Fp32(random, (16 * Block) + tail);
            random.NextBytes(bytes.AsSpan(16 * Block)); // an incompressible tail: its record's length follows its own
            File.WriteAllBytes(live, bytes);
            var store = dir.Sub($"try{attempt}/store");
            var first = SnapshotWriter.Take(store, [live], null, diffInput: false, "snapshot (test)", alignChanged: true);
            Fp32(random, Block).CopyTo(bytes, 5 * Block);
            random.NextBytes(bytes.AsSpan(16 * Block));
            File.WriteAllBytes(live, bytes);
            var second = SnapshotWriter.Take(store, [live], first.Id, diffInput: false, "snapshot (test)", alignChanged: true);
            long lead;
            using (var reader = TraceReader.Open(store))
            {
                var version = reader.StateAt(reader.Session(second.Id), long.MaxValue).Single();
                Assert.True(ExtentMap.TryDecode(version.Extents, version.Size, out var extents));
                var slice = reader.Blob(extents.Single(e => e.Offset == 5L * Block).BlobRowId);
                var group = reader.Blob(slice.Bases.Single());
                Assert.NotNull(AlignedGroupFrame.RawOffset(store, group, slice));
                lead = group.RawLength - Block;
            }

            if (lead != 16)
            {
                // No trailer: `lead` zeros precede the member; a record that many bytes later needs none.
                tail += (int)lead == 0 ? 1 : (int)lead;
                continue;
            }

            var parent = dir.Sub($"try{attempt}/out0");
            var output = dir.Sub($"try{attempt}/out1");
            MaterializeResult result;
            using (var reader = TraceReader.Open(store))
            {
                SnapshotMaterializer.Materialize(reader, first.Id, parent, null);
                result = SnapshotMaterializer.Materialize(reader, second.Id, output, parent);
                Assert.True(TraceVerifier.Verify(reader, readData: true).Ok);
            }

            BigFileRoundTripTests.AssertSameFile(live, Path.Combine(output, "ckpt.bin"), $"tail {tail}");
            Assert.Equal((long)Block, Assert.Single(result.Files).BytesCloned);
            return;
        }

        Assert.Fail("no aligned group with a trailer was written in 8 attempts");
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
