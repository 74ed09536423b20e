using DiffKeeper.Replay.BigFiles;
using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Tests;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Replay.Tests;

/// <summary>
/// Snapshots of a big sparse file through random block rewrites, hole punches and size changes over 20 versions
/// (full files and Firecracker-style diff files), each materialized (cloned from the previous materialization where
/// the file system can, else copied) and compared byte for byte and hole for hole with the file it was taken of.
/// </summary>
public sealed class BigFileRoundTripTests
{
    private const int Page = 4096;

    [Theory]
    [InlineData("tmp", 1)]
    [InlineData("xfs", 3)]
    [InlineData("btrfs", 4)]
    public void TwentyVersionsRebuildByteForByteAndHoleForHole(string fileSystem, int seed)
    {
        using var mount = fileSystem == "tmp" ? null : LoopMount.CreateOrSkip(fileSystem);
        using var dir = new TempDir(mount?.Path);
        var random = new Random(seed);
        var live = dir.Sub("live");
        var store = dir.Sub("store");
        var size = 4L << 20;
        using (var f = File.OpenHandle(live, FileMode.CreateNew, FileAccess.Write))
        {
            RandomAccess.SetLength(f, size);
            for (var i = 0; i < 40; i++)
            {
                Rewrite(f, random, size, out _, out _);
            }
        }

        long? parent = null;
        string? previousOut = null;
        for (var version = 0; version < 20; version++)
        {
            var diffInput = false;
            if (version > 0)
            {
                var changed = new List<(long, int)>();
                using var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite);
                var onlyRewrites = random.Next(3) == 0;
                for (var op = random.Next(1, 12); op > 0; op--)
                {
                    switch (onlyRewrites ? 0 : random.Next(6))
                    {
                        case 0 or 1 or 2:
                            Rewrite(f, random, size, out var at, out var length);
                            changed.Add((at, length));
                            break;
                        case 3 or 4:
                            var start = random.NextInt64(size / Page) * Page;
                            Assert.Equal(0, Libc.Fallocate((int)f.DangerousGetHandle(), Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, start,
                                random.Next(1, 40) * Page));
                            break;
                        default:
                            size = random.Next(3, 6) * (1L << 20) + random.Next(0, 3) * Page + random.Next(0, 2) * 100;
                            RandomAccess.SetLength(f, size);
                            break;
                    }
                }

                if (onlyRewrites)
                {
                    // A diff snapshot as Firecracker writes one: a sparse file of the full size holding only the changed pages.
                    diffInput = true;
                    WriteDiff(dir.Sub("diff-" + version), live, size, changed);
                }
            }

            // xfs reports the ranges around fresh writes as data (SEEK_DATA) until writeback decides what is
            // allocated; the comparison below is with what the file holds once written back.
            using (var f = File.OpenHandle(live, FileMode.Open, FileAccess.ReadWrite))
            {
                RandomAccess.FlushToDisk(f);
            }

            var input = diffInput ? dir.Sub("diff-" + version) : live;
            var name = diffInput ? Path.Combine(dir.Sub("d" + version), "live") : live;
            if (diffInput)
            {
                Directory.CreateDirectory(dir.Sub("d" + version));
                File.Move(input, name);
            }

            var taken = SnapshotWriter.Take(store, [name], parent, diffInput, "snapshot (test)");
            var output = dir.Sub("out" + (version % 2));
            using (var reader = TraceReader.Open(store))
            {
                SnapshotMaterializer.Materialize(reader, taken.Id, output, previousOut);
            }

            AssertSameFile(live, Path.Combine(output, "live"), $"seed {seed}, version {version}{(diffInput ? " (diff input)" : "")}");
            if (mount is not null && previousOut is not null)
            {
                Assert.True(LoopMount.HasSharedExtents(Path.Combine(output, "live")), $"version {version} on {fileSystem} shares no extent with version {version - 1}");
            }

            if (previousOut is not null)
            {
                // The base stays exactly what it was: the clone is a new file, never a merge in place.
                Assert.True(File.Exists(Path.Combine(previousOut, SnapshotMaterializer.MarkerName)));
            }

            parent = taken.Id;
            previousOut = output;
        }
    }

    [Fact]
    public void SubtractLeavesWhatNoCoverTouches()
    {
        var left = SnapshotMaterializer.Subtract([(0, 100), (200, 300)], [(50, 60), (250, 400)], 280);
        Assert.Equal([(0L, 50L), (60L, 100L), (200L, 250L)], left);
    }

    private static void Rewrite(Microsoft.Win32.SafeHandles.SafeFileHandle f, Random random, long size, out long at, out int length)
    {
        at = random.NextInt64(size / Page) * Page;
        length = (int)Math.Min(random.Next(1, 24) * Page, size - at);
        var bytes = new byte[length];
        random.NextBytes(bytes);
        RandomAccess.Write(f, bytes, at);
    }

    private static void WriteDiff(string path, string live, long size, List<(long At, int Length)> changed)
    {
        using var src = File.OpenHandle(live, FileMode.Open, FileAccess.Read);
        using var diff = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.SetLength(diff, size);
        foreach (var (at, length) in changed)
        {
            var bytes = new byte[length];
            var n = RandomAccess.Read(src, bytes, at);
            RandomAccess.Write(diff, bytes.AsSpan(0, n), at);
        }
    }

    internal static void AssertSameFile(string expected, string actual, string what)
    {
        Assert.Equal(File.ReadAllBytes(expected), File.ReadAllBytes(actual));
        using var e = File.OpenHandle(expected);
        using var a = File.OpenHandle(actual);
        WrittenBack(e);
        WrittenBack(a);
        var el = RandomAccess.GetLength(e);
        Assert.Equal(el, RandomAccess.GetLength(a));
        Assert.True(BlockIngest.DataRanges(e, 0, el).SequenceEqual(BlockIngest.DataRanges(a, 0, el)),
            $"{what}: holes differ: expected {Ranges(e, el)}, got {Ranges(a, el)}");
    }

    /// <summary>
    /// Holes as the file system keeps them, not as its page cache shows them: xfs reports an unwritten extent as
    /// data wherever a cached folio (large folios span up to 256 KiB around a write) covers it, so the file is
    /// written back and its pages dropped before SEEK_DATA is asked.
    /// </summary>
    private static void WrittenBack(Microsoft.Win32.SafeHandles.SafeFileHandle f)
    {
        Assert.Equal(0, Libc.Fsync((int)f.DangerousGetHandle()));
        Assert.Equal(0, Libc.PosixFadvise((int)f.DangerousGetHandle(), 0, 0, Libc.POSIX_FADV_DONTNEED));
    }

    private static string Ranges(Microsoft.Win32.SafeHandles.SafeFileHandle f, long size) =>
        string.Join(' ', BlockIngest.DataRanges(f, 0, size).Select(r => $"{r.Start}-{r.End}"));
}
