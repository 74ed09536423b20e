using System.Buffers.Binary;
using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Changed 64 KiB blocks that zstd shrinks by less than an eighth (fp32 weights, random bytes) are stored raw in aligned
/// groups (docs/store-format.md, "Aligned groups"): each such block's bytes lie, as they are, at a 4 KiB-aligned offset
/// of its pack, inside a group record that any zstd decoder reads; blocks that compress, and every block of a first
/// version, are stored as before; every version reads back byte for byte and verifies, before and after a maintenance
/// pass; a store written the old way reads the same.
/// </summary>
public sealed class AlignedGroupTests
{
    private const int Block = BlockPiece.BlockSize;

    [Theory]
    [InlineData(true, 11)]
    [InlineData(false, 12)]
    public void Changed_blocks_that_compress_badly_lie_raw_and_aligned_and_every_version_reads_back(bool align, int seed)
    {
        using var dir = new TempDir();
        var random = new Random(seed);
        var path = dir.Sub("ckpt.bin");
        var size = (160L * Block) + 5000; // a last block that is not whole
        using (var f = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite))
        {
            RandomAccess.Write(f, Fp32(random, (int)size), 0);
        }

        var store = dir.Sub("store");
        var states = new List<byte[]>();
        var expectAligned = new List<HashSet<long>>(); // per version: offsets of changed blocks that do not compress
        long? parent = null;
        for (var v = 0; v < 6; v++)
        {
            var aligned = new HashSet<long>();
            if (v > 0)
            {
                using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
                // 1, 16 (a group fills at 15), 17, ... changed blocks: groups of odd and even sizes, full and not.
                var count = v switch { 1 => 1, 2 => 16, 3 => 17, 4 => 31, _ => 2 };
                foreach (var k in Enumerable.Range(0, 160).OrderBy(_ => random.Next()).Take(count))
                {
                    var compressible = k % 5 == 0;
                    RandomAccess.Write(f, compressible ? Repetitive(random) : Fp32(random, Block), (long)k * Block);
                    if (!compressible)
                    {
                        aligned.Add((long)k * Block);
                    }
                }

                RandomAccess.Write(f, Fp32(random, 5000), 160L * Block); // the partial last block: stored as before
            }

            var taken = SnapshotWriter.Take(store, [path], parent, diffInput: false, "test", alignChanged: align);
            parent = taken.Id;
            states.Add(File.ReadAllBytes(path));
            expectAligned.Add(aligned);
        }

        // Every statement of the writer is finalized at its close, so the close checkpoints the catalog: no WAL is left
        // beside it (pull copies catalog.db alone).
        var wal = Path.Combine(store, "catalog.db-wal");
        Assert.False(File.Exists(wal) && new FileInfo(wal).Length > 0, "the snapshot left its WAL beside the catalog");

        using var r = TraceReader.Open(store);
        var versions = r.AllVersions().Where(v => v.Kind == Core.EntryKind.File).OrderBy(v => v.Id).ToList();
        Assert.Equal(states.Count, versions.Count);
        var blobs = r.AllBlobs().ToDictionary(b => b.BlobRowId);
        for (var i = 0; i < versions.Count; i++)
        {
            Assert.True(states[i].AsSpan().SequenceEqual(TraceStoreTests.ReadBack(r, versions[i])), $"version {i}");
            Assert.True(ExtentMap.TryDecode(versions[i].Extents, versions[i].Size, out var extents));
            foreach (var e in extents)
            {
                var loc = blobs[e.BlobRowId];
                var isAligned = loc.IsSlice && blobs[loc.Bases[0]].Codec == BlobCodec.Group && blobs[loc.Bases[0]].RawLength > Block;
                if (expectAligned[i].Contains(e.Offset))
                {
                    Assert.Equal(align, isAligned);
                    if (align)
                    {
                        // The block's bytes, as they are, at a 4 KiB boundary of the pack: where a clone takes them from.
                        AssertRawAndAligned(store, blobs[loc.Bases[0]], loc, states[i].AsSpan((int)e.Offset, e.Length), $"version {i}, block at {e.Offset}");
                    }
                }
                else if (i == 0 || e.Length != Block)
                {
                    Assert.False(isAligned, $"version {i}: block at {e.Offset} ({e.Length} bytes) is in an aligned group"); // first versions, partial blocks
                }
            }
        }

        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        r.Dispose();

        // A maintenance pass (compaction, grouping, and a repack of every pack) keeps every version readable, and the
        // aligned groups it copies aligned.
        var packsBefore = blobs.Values.Where(b => b.Codec == BlobCodec.Group).ToDictionary(b => b.BlobRowId, b => b.PackId);
        StoreMaintenance.Run(store, new MaintenanceOptions(RepackThreshold: 2), DateTimeOffset.UtcNow);
        using var after = TraceReader.Open(store);
        var again = after.AllVersions().Where(v => v.Kind == Core.EntryKind.File).OrderBy(v => v.Id).ToList();
        var moved = after.AllBlobs().ToDictionary(b => b.BlobRowId);
        var stillAligned = 0;
        for (var i = 0; i < again.Count; i++)
        {
            Assert.True(states[i].AsSpan().SequenceEqual(TraceStoreTests.ReadBack(after, again[i])), $"version {i} after maintenance");
            Assert.True(ExtentMap.TryDecode(again[i].Extents, again[i].Size, out var extents));
            foreach (var e in extents.Where(e => expectAligned[i].Contains(e.Offset)))
            {
                var loc = moved[e.BlobRowId];
                if (align && loc.IsSlice && moved[loc.Bases[0]] is var g && g.Codec == BlobCodec.Group && AlignedGroupFrame.RawOffset(store, g, loc) is not null)
                {
                    Assert.NotEqual(packsBefore[g.BlobRowId], g.PackId); // repacked
                    AssertRawAndAligned(store, g, loc, states[i].AsSpan((int)e.Offset, e.Length), $"version {i}, block at {e.Offset}, after repacking");
                    stillAligned++;
                }
            }
        }

        Assert.True(!align || stillAligned > 0, "no aligned group was kept through maintenance");

        Assert.True(TraceVerifier.Verify(after, readData: true).Ok);
    }

    private static void AssertRawAndAligned(string store, BlobLocation group, BlobLocation slice, ReadOnlySpan<byte> expected, string what)
    {
        var at = AlignedGroupFrame.RawOffset(store, group, slice);
        Assert.NotNull(at);
        Assert.Equal(0, at.Value % 4096);
        using var pack = File.OpenHandle(Path.Combine(store, PackFormat.RelativePath(group.PackId)));
        var bytes = new byte[expected.Length];
        Assert.Equal(expected.Length, RandomAccess.Read(pack, bytes, at.Value));
        Assert.True(bytes.AsSpan().SequenceEqual(expected), what);
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

    private static byte[] Repetitive(Random random) => [.. Enumerable.Range(0, Block).Select(i => (byte)(random.Next(4) + (i / 512)))];
}
