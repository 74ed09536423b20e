using DiffKeeper.Native.Interop;
using DiffKeeper.Replay.BigFiles;
using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Replay.Tests;

/// <summary>
/// `snapshot`'s block fingerprints (docs/store-format.md, "Block fingerprints"): a chain of 20 snapshots of a sparse
/// file under random block rewrites (some with the bytes it already had), hole punches and size changes, with the
/// fingerprint cache kept, deleted, damaged, replaced by another version's, re-seeded or ignored (--verify-all):
/// every version rebuilds byte for byte and hole for hole, and has the very content id a store that SHA-256'd every
/// block gives; the fingerprints spare SHA-256 only when the cache is intact.
/// </summary>
public sealed class BlockFingerprintTests
{
    private const int Page = 4096;

    public enum Cache
    {
        Kept,
        Deleted,
        Flipped,
        Garbled,
        OtherVersions,
        Reseeded,
        VerifyAll,
    }

    [Theory]
    [InlineData(Cache.Kept, 1)]
    [InlineData(Cache.Kept, 2)]
    [InlineData(Cache.Deleted, 3)]
    [InlineData(Cache.Flipped, 4)]
    [InlineData(Cache.Garbled, 5)]
    [InlineData(Cache.OtherVersions, 6)]
    [InlineData(Cache.Reseeded, 7)]
    [InlineData(Cache.VerifyAll, 8)]
    public void EveryVersionIsTheFileWhateverTheCacheHolds(Cache cache, int seed)
    {
        using var dir = new TempDir();
        var random = new Random(seed);
        var live = dir.Sub("live");
        var store = dir.Sub("store");
        var reference = dir.Sub("reference"); // the same files, every block compared by SHA-256
        var size = 4L << 20;
        using (var f = File.OpenHandle(live, FileMode.CreateNew, FileAccess.Write))
        {
            RandomAccess.SetLength(f, size);
            for (var i = 0; i < 40; i++)
            {
                Rewrite(f, random, size, same: false);
            }
        }

        long? parent = null, referenceParent = null;
        var previousVersion = 0L;
        for (var version = 0; version < 20; version++)
        {
            if (version > 0)
            {
                using var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite);
                for (var op = random.Next(1, 8); op > 0; op--)
                {
                    switch (random.Next(7))
                    {
                        case 0 or 1 or 2:
                            Rewrite(f, random, size, same: false);
                            break;
                        case 3:
                            Rewrite(f, random, size, same: true); // written, but the bytes it had: no new block
                            break;
                        case 4 or 5:
                            Assert.Equal(0, Libc.Fallocate((int)f.DangerousGetHandle(), Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE,
                                random.NextInt64(size / Page) * Page, random.Next(1, 40) * Page));
                            break;
                        default:
                            size = random.Next(3, 6) * (1L << 20) + random.Next(0, 3) * Page + random.Next(0, 2) * 100;
                            RandomAccess.SetLength(f, size);
                            break;
                    }
                }

                RandomAccess.FlushToDisk(f);
                Tamper(cache, store, previousVersion, random);
            }

            var taken = SnapshotWriter.Take(store, [live], parent, false, "snapshot (test)", verifyAll: cache == Cache.VerifyAll);
            var expected = SnapshotWriter.Take(reference, [live], referenceParent, false, "snapshot (test)", verifyAll: true);
            var file = Assert.Single(taken.Files);
            Assert.Equal(0, Assert.Single(expected.Files).PiecesByFingerprint);
            if (version > 0)
            {
                if (cache == Cache.Kept)
                {
                    Assert.True(file.PiecesByFingerprint > 0, $"version {version}: no block was recognised by its fingerprint");
                }
                else
                {
                    Assert.Equal(0, file.PiecesByFingerprint);
                }
            }

            Assert.Equal(ContentId(reference, expected.Id), ContentId(store, taken.Id));
            var output = dir.Sub("out" + version);
            using (var reader = TraceReader.Open(store))
            {
                SnapshotMaterializer.Materialize(reader, taken.Id, output, null);
            }

            AssertSameFile(live, Path.Combine(output, "live"), $"seed {seed}, cache {cache}, version {version}");
            TempDir.Remove(output);
            parent = taken.Id;
            referenceParent = expected.Id;
            previousVersion = file.VersionId;
        }

        Assert.Equal(2, Directory.GetFiles(Path.Combine(store, FingerprintCache.DirName)).Length); // the seed and the newest version's
    }

    /// <summary>What a test does to the cache between two snapshots; every case but <see cref="Cache.Kept"/> must make the next one SHA-256 every block.</summary>
    private static void Tamper(Cache cache, string store, long parentVersion, Random random)
    {
        var path = FingerprintCache.FilePath(store, parentVersion);
        Assert.True(File.Exists(path), $"no fingerprints were written for version {parentVersion}");
        switch (cache)
        {
            case Cache.Deleted:
                Directory.Delete(Path.Combine(store, FingerprintCache.DirName), recursive: true);
                break;
            case Cache.Flipped:
            {
                var bytes = File.ReadAllBytes(path);
                bytes[random.Next(bytes.Length)] ^= (byte)(1 << random.Next(8)); // a bit anywhere: header, fingerprints or checksum
                File.WriteAllBytes(path, bytes);
                break;
            }

            case Cache.Garbled:
            {
                // Well-formed, checksum and all, but every fingerprint wrong: none matches, so none is trusted.
                using var reader = TraceReader.Open(store);
                var v = reader.AllVersions().Single(x => x.Id == parentVersion);
                var pieces = Enumerable.Range(0, ExtentCount(v)).Select(i => new BlockPiece(0, 0, 0, default) { Fingerprint = new UInt128((ulong)random.NextInt64(), (ulong)random.NextInt64()) }).ToList();
                FingerprintCache.Write(store, parentVersion, v.ContentId!, FingerprintCache.Seed(store), pieces);
                break;
            }

            case Cache.OtherVersions:
            {
                // A well-formed file (its checksum remade) that names another version, or another content.
                var bytes = File.ReadAllBytes(path);
                if (random.Next(2) == 0)
                {
                    BitConverter.GetBytes(parentVersion + 1).CopyTo(bytes, 24);
                }
                else
                {
                    bytes[32 + random.Next(32)] ^= 1;
                }

                var sum = System.IO.Hashing.XxHash128.HashToUInt128(bytes.AsSpan(0, bytes.Length - 16));
                BitConverter.GetBytes((ulong)sum).CopyTo(bytes, bytes.Length - 16);
                BitConverter.GetBytes((ulong)(sum >> 64)).CopyTo(bytes, bytes.Length - 8);
                File.WriteAllBytes(path, bytes);
                break;
            }

            case Cache.Reseeded:
                File.WriteAllBytes(Path.Combine(store, FingerprintCache.DirName, "seed"), [1, 2, 3]);
                break;
        }
    }

    private static int ExtentCount(Storage.Catalog.VersionRecord v)
    {
        Assert.True(ExtentMap.TryDecode(v.Extents!, v.Size, out var extents));
        return extents.Count;
    }

    private static byte[] ContentId(string store, long snapshot)
    {
        using var reader = TraceReader.Open(store);
        var session = reader.Session(snapshot);
        return Assert.Single(reader.StateAt(session, long.MaxValue)).ContentId!;
    }

    private static void Rewrite(Microsoft.Win32.SafeHandles.SafeFileHandle f, Random random, long size, bool same)
    {
        var at = random.NextInt64(size / Page) * Page;
        var length = (int)Math.Min(random.Next(1, 24) * Page, size - at);
        var bytes = new byte[length];
        if (same)
        {
            RandomAccess.Read(f, bytes, at);
        }
        else
        {
            random.NextBytes(bytes);
        }

        RandomAccess.Write(f, bytes, at);
    }

    private static void AssertSameFile(string expected, string actual, string what)
    {
        Assert.Equal(File.ReadAllBytes(expected), File.ReadAllBytes(actual));
        using var e = File.OpenHandle(expected);
        using var a = File.OpenHandle(actual);
        var el = RandomAccess.GetLength(e);
        Assert.Equal(el, RandomAccess.GetLength(a));
        Assert.True(BlockIngest.DataRanges(e, 0, el).SequenceEqual(BlockIngest.DataRanges(a, 0, el)), $"{what}: holes differ");
    }
}
