using System.Diagnostics;
using System.Text.Json;
using DiffKeeper.Replay.Tests;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`snapshot` and `materialize` as a VM snapshot tool would drive them, on real file systems.</summary>
public sealed class BigFileSnapshotTests
{
    private const int MiB = 1 << 20;

    [Theory]
    [InlineData("btrfs")]
    [InlineData("xfs")]
    public void MaterializingBesideAnEarlierVersionClonesItAndSharesExtents(string fileSystem)
    {
        using var mount = LoopMount.CreateOrSkip(fileSystem);

        var dir = mount.Path;
        var (image, store, first, second, v1) = TwoSnapshots(dir, seed: 7, 16 * MiB, dataPages: 1000, rewritten: 40);

        Cli.Ok(dir, "materialize", first.ToString(), "--store", store, "--out", Path.Combine(dir, "a"));
        var r = Cli.Ok(dir, "materialize", second.ToString(), "--store", store, "--base", Path.Combine(dir, "a"), "--out", Path.Combine(dir, "b"));
        Assert.DoesNotContain("copying instead", r.Stderr);
        Assert.Contains("1 cloned", r.Stderr);
        Assert.Equal(Bytes(image), Bytes(Path.Combine(dir, "b", "disk.img")));
        Assert.Equal(v1, Bytes(Path.Combine(dir, "a", "disk.img")));
        Assert.True(LoopMount.HasSharedExtents(Path.Combine(dir, "b", "disk.img")), LoopMount.Run("filefrag", "-v", Path.Combine(dir, "b", "disk.img")).Output);
        Assert.Equal(DataRanges(image), DataRanges(Path.Combine(dir, "b", "disk.img")));
    }

    /// <summary>
    /// A build directory left by a materialize that never published (its marker is fsynced before its files' bytes, so
    /// after a power loss it may name files whose data is not on disk) is never a base, also when named by --base.
    /// </summary>
    [Fact]
    public void ABuildDirectoryIsNeverTakenAsABase()
    {
        using var mount = LoopMount.CreateOrSkip("xfs");

        var dir = mount.Path;
        var (image, store, first, second, _) = TwoSnapshots(dir, seed: 11, 4 * MiB, dataPages: 200, rewritten: 10);
        Cli.Ok(dir, "materialize", first.ToString(), "--store", store, "--out", Path.Combine(dir, "a"));
        var build = Path.Combine(dir, ".b.dk-snap-1-0123456789abcdef");
        Directory.Move(Path.Combine(dir, "a"), build); // a complete marker, under a build directory's name

        var r = Cli.Ok(dir, "materialize", second.ToString(), "--store", store, "--base", build, "--out", Path.Combine(dir, "b"));
        Assert.DoesNotContain("1 cloned", r.Stderr);
        Assert.Equal(Bytes(image), Bytes(Path.Combine(dir, "b", "disk.img")));
    }

    /// <summary>
    /// Every file of a materialization is fsynced before the rename that publishes it, and after the marker's fsync
    /// (on xfs the marker's then forces the log past the files' changes, so theirs force nothing again). Seen from the
    /// outside: strace's record of the process's opens, fsyncs and renames.
    /// </summary>
    [Fact]
    public void EveryFileIsFsyncedAfterTheMarkerAndBeforeThePublish()
    {
        using var mount = LoopMount.CreateOrSkip("xfs");

        if (!File.Exists("/usr/bin/strace"))
        {
            Assert.Skip("strace is not installed (apt-get install strace)");
            return;
        }

        var dir = mount.Path;
        var random = new Random(16);
        MakeSparse(Path.Combine(dir, "mem"), 4 * MiB, random, dataPages: 300);
        MakeSparse(Path.Combine(dir, "disk"), 4 * MiB, random, dataPages: 300);
        var store = Path.Combine(dir, "store");
        var first = Snapshot(dir, "snapshot", Path.Combine(dir, "mem"), Path.Combine(dir, "disk"), "--store", store, "--json");
        RewritePages(Path.Combine(dir, "mem"), random, 10);
        var second = Snapshot(dir, "snapshot", Path.Combine(dir, "mem"), Path.Combine(dir, "disk"), "--store", store, "--parent", first.ToString(), "--json");
        Cli.Ok(dir, "materialize", first.ToString(), "--store", store, "--out", Path.Combine(dir, "a"));

        // Beside a base (clones) and without one (copies).
        foreach (var (output, extra) in new[] { ("b", new[] { "--base", Path.Combine(dir, "a") }), ("c", Array.Empty<string>()) })
        {
            var trace = Path.Combine(dir, output + ".strace");
            var (code, text) = LoopMount.Run("/usr/bin/strace", ["-f", "-qq", "-s", "4096", "-e", "trace=openat,fsync,rename,renameat,renameat2", "-o", trace, Cli.Executable,
                "materialize", second.ToString(), "--store", store, "--out", Path.Combine(dir, output), .. extra]);
            Assert.True(code == 0, text);
            var lines = File.ReadAllLines(trace);
            // (line of the open, descriptor) of the file created with this name
            (int Line, int Fd) Created(string name)
            {
                var at = Array.FindIndex(lines, l => l.Contains("openat(", StringComparison.Ordinal) && l.Contains("O_CREAT", StringComparison.Ordinal) &&
                    (l.Contains($"\"{name}\"", StringComparison.Ordinal) || l.Contains($"/{name}\"", StringComparison.Ordinal)));
                Assert.True(at >= 0, $"no open of {name}\n{string.Join('\n', lines)}");
                return (at, int.Parse(lines[at].Split("= ")[^1].Trim(), System.Globalization.CultureInfo.InvariantCulture));
            }

            bool FsyncOf(string line, int fd) => line.Contains($"fsync({fd})", StringComparison.Ordinal);
            var publish = Array.FindIndex(lines, l => l.Contains("rename", StringComparison.Ordinal) && l.Contains(".dk-snap-", StringComparison.Ordinal));
            var (markerOpen, markerFd) = Created(".diffkeeper-snapshot");
            var marker = Array.FindIndex(lines, markerOpen, l => FsyncOf(l, markerFd));
            Assert.True(marker > markerOpen && publish > marker, string.Join('\n', lines));
            foreach (var name in new[] { "mem", "disk" })
            {
                // Its descriptor stays open from its creation to its fsync (a file with holes is fsynced once more
                // before, to look for the ranges to trim).
                var (_, fd) = Created(name);
                var synced = Array.FindIndex(lines, marker + 1, publish - marker - 1, l => FsyncOf(l, fd));
                Assert.True(synced > marker, $"{name} (fd {fd}): no fsync between the marker's (line {marker}) and the rename (line {publish})\n{string.Join('\n', lines)}");
            }

            Assert.Equal(Bytes(Path.Combine(dir, "mem")), Bytes(Path.Combine(dir, output, "mem")));
            Assert.Equal(Bytes(Path.Combine(dir, "disk")), Bytes(Path.Combine(dir, output, "disk")));

            // The catalog is opened once: the reader's own close removes its -wal and -shm (no second connection for them).
            Assert.Single(lines, l => l.Contains("openat(", StringComparison.Ordinal) && l.Contains("/catalog.db\"", StringComparison.Ordinal) &&
                !l.Contains("O_NONBLOCK", StringComparison.Ordinal));
            Assert.False(File.Exists(Path.Combine(store, "catalog.db-shm")));
            Assert.False(File.Exists(Path.Combine(store, "catalog.db-wal")));
        }
    }

    [Fact]
    public void OnExt4TheCopyIsUsedAndTheReasonSaidOnce()
    {
        using var mount = LoopMount.CreateOrSkip("ext4");

        var dir = mount.Path;
        var random = new Random(8);
        MakeSparse(Path.Combine(dir, "mem"), 4 * MiB, random, dataPages: 300);
        MakeSparse(Path.Combine(dir, "disk"), 4 * MiB, random, dataPages: 300);
        var store = Path.Combine(dir, "store");
        var first = Snapshot(dir, "snapshot", Path.Combine(dir, "mem"), Path.Combine(dir, "disk"), "--store", store, "--json");
        RewritePages(Path.Combine(dir, "mem"), random, 10);
        var second = Snapshot(dir, "snapshot", Path.Combine(dir, "mem"), Path.Combine(dir, "disk"), "--store", store, "--parent", first.ToString(), "--json");
        var output = Path.Combine(dir, "vm");
        Cli.Ok(dir, "materialize", first.ToString(), "--store", store, "--out", output);
        var r = Cli.Ok(dir, "materialize", second.ToString(), "--store", store, "--out", output);
        var reasons = r.Stderr.Split('\n').Where(l => l.Contains("copying instead of cloning", StringComparison.Ordinal)).ToList();
        Assert.Single(reasons);
        Assert.Contains("reflink", reasons[0]);
        Assert.Equal(Bytes(Path.Combine(dir, "mem")), Bytes(Path.Combine(output, "mem")));
        Assert.Equal(DataRanges(Path.Combine(dir, "disk")), DataRanges(Path.Combine(output, "disk")));
        AssertAllocatedAlike(Path.Combine(dir, "mem"), Path.Combine(output, "mem"));
    }

    [Fact]
    public void AFirecrackerDiffSnapshotIsMergedOntoItsParent()
    {
        using var dir = new TempDir();
        var random = new Random(9);
        var mem = dir.Sub("mem");
        MakeSparse(mem, 8 * MiB, random, dataPages: 500);
        var first = Snapshot(dir.Path, "snapshot", mem, "--store", dir.Sub("store"), "--json");

        // The VM dirties 30 pages; Firecracker writes them alone into a sparse file of the memory's size.
        Directory.CreateDirectory(dir.Sub("diff"));
        var diff = Path.Combine(dir.Sub("diff"), "mem");
        using (var d = File.OpenHandle(diff, FileMode.CreateNew, FileAccess.Write))
        using (var m = File.OpenHandle(mem, FileMode.Open, FileAccess.Write))
        {
            RandomAccess.SetLength(d, 8 * MiB);
            for (var i = 0; i < 30; i++)
            {
                var page = new byte[4096];
                random.NextBytes(page);
                var at = random.NextInt64(8 * MiB / 4096) * 4096;
                RandomAccess.Write(d, page, at);
                RandomAccess.Write(m, page, at);
            }
        }

        var r = Cli.Ok(dir.Path, "snapshot", "--diff", "--parent", first.ToString(), diff, "--store", dir.Sub("store"), "--json");
        using var json = JsonDocument.Parse(r.Stdout);
        var second = json.RootElement.GetProperty("id").GetInt64();
        Assert.InRange(json.RootElement.GetProperty("files")[0].GetProperty("new_blocks").GetInt32(), 1, 30 + 500);
        Cli.Ok(dir.Path, "materialize", second.ToString(), "--store", dir.Sub("store"), "--out", dir.Sub("out"));
        Assert.Equal(Bytes(mem), Bytes(Path.Combine(dir.Sub("out"), "mem")));
        Assert.Equal(DataRanges(mem), DataRanges(Path.Combine(dir.Sub("out"), "mem")));
        AssertAllocatedAlike(mem, Path.Combine(dir.Sub("out"), "mem"));

        var bad = Cli.Run(dir.Path, "snapshot", "--diff", diff, "--store", dir.Sub("store"));
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("diffkeeper: --diff needs --parent", bad.Stderr);
        var notEmpty = Cli.Run(dir.Path, "materialize", second.ToString(), "--store", dir.Sub("store"), "--out", dir.Sub("diff"));
        Assert.Equal(6, notEmpty.ExitCode);
        Assert.StartsWith("diffkeeper: ", notEmpty.Stderr);
    }

    /// <summary>`record --big-file`: a rewrite of one page of a big sparse file stores about a block, and exports byte for byte with its holes.</summary>
    [Fact]
    public void RecordStoresTheChangedBlocksOfABigSparseFile()
    {
        using var dir = new TempDir();
        var work = dir.Sub("work");
        Directory.CreateDirectory(work);
        var image = Path.Combine(work, "disk.img");
        MakeSparse(image, 64 * MiB, new Random(11), dataPages: 1000);
        var trace = dir.Sub("trace");
        Cli.Ok(work, "record", "--trace", trace, "--capture", "inotify", "--big-file", "1M", "-q", "--",
            "sh", "-c", "head -c 4096 /dev/urandom | dd of=disk.img bs=4096 seek=777 conv=notrunc status=none");
        var packs = Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.InRange(packs, 900 * 4096, 1000 * 4096 + 2 * 65536 + 1000 * 200); // random pages, some drawn twice
        Cli.Ok(work, "export", "--trace", trace, "--out", dir.Sub("out"));
        Assert.Equal(Bytes(image), Bytes(Path.Combine(dir.Sub("out"), "disk.img")));
        Assert.Equal(DataRanges(image), DataRanges(Path.Combine(dir.Sub("out"), "disk.img")));
        var bad = Cli.Run(work, "record", "--trace", trace, "--big-file", "lots", "--", "true");
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("diffkeeper: --big-file expects a size such as 64M, 1G or a number of bytes, got 'lots'", bad.Stderr);
    }

    /// <summary>
    /// kill -9 at random points of 20 materializations: the published directory is always the old complete snapshot
    /// or the new complete one, and the next run removes whatever the killed one left.
    /// </summary>
    [Fact]
    public void KilledMaterializationsLeaveTheOldOrTheNewOutputAndNoTemporaryDirectory()
    {
        using var dir = new TempDir();
        var random = new Random(10);
        var image = dir.Sub("disk.img");
        var store = dir.Sub("store");
        MakeSparse(image, 16 * MiB, random, dataPages: 2500);
        var contents = new Dictionary<long, byte[]>();
        var first = Snapshot(dir.Path, "snapshot", image, "--store", store, "--json");
        contents[first] = Bytes(image);
        RewritePages(image, random, 600);
        var second = Snapshot(dir.Path, "snapshot", image, "--store", store, "--parent", first.ToString(), "--json");
        contents[second] = Bytes(image);
        var output = dir.Sub("out");
        var sw = Stopwatch.StartNew();
        Cli.Ok(dir.Path, "materialize", first.ToString(), "--store", store, "--out", output);
        var full = sw.ElapsedMilliseconds;
        var published = first;
        for (var i = 0; i < 20; i++)
        {
            var next = published == first ? second : first;
            using (var p = Cli.Start(dir.Path, "materialize", next.ToString(), "--store", store, "--out", output))
            {
                Thread.Sleep(random.Next(0, (int)Math.Max(20, full * 1.2)));
                try
                {
                    p.Kill();
                }
                catch (InvalidOperationException)
                {
                    // already finished
                }

                p.WaitForExit();
            }

            var now = MarkerSnapshot(output);
            Assert.True(now == first || now == second, $"round {i}: the output names snapshot {now}");
            Assert.Equal(contents[now], Bytes(Path.Combine(output, "disk.img")));
            published = now;
        }

        Cli.Ok(dir.Path, "materialize", first.ToString(), "--store", store, "--out", output);
        Assert.Empty(Directory.EnumerateFileSystemEntries(dir.Path, ".out*"));
        Assert.Equal(contents[first], Bytes(Path.Combine(output, "disk.img")));
    }

    /// <summary>
    /// kill -9 at random points of 20 snapshots of two files (a sparse image of 4 KiB pages, whose fingerprint file holds
    /// fingerprints only, and a dense checkpoint of full blocks, whose file holds the blob ids too): after each, the store
    /// verifies with --read-data and holds either no new session or the new snapshot complete (both files as they were
    /// when it started), never an unfinished session; the next snapshot builds on the newest one, and every snapshot
    /// kept rebuilds byte for byte at the end. The pack's fsync runs beside the last catalog rows, and the session
    /// commits once, after it (docs/architecture.md, "Big files").
    /// </summary>
    [Fact]
    public void KilledSnapshotsLeaveTheStoreWithTheOldOrTheNewSnapshotComplete()
    {
        using var dir = new TempDir();
        var random = new Random(14);
        var image = dir.Sub("disk.img");
        var dense = dir.Sub("mem.bin");
        var store = dir.Sub("store");
        MakeSparse(image, 16 * MiB, random, dataPages: 1500);
        var bytes = new byte[8 * MiB];
        random.NextBytes(bytes);
        File.WriteAllBytes(dense, bytes);
        var contents = new Dictionary<long, (byte[] Image, byte[] Dense)>();
        var sw = Stopwatch.StartNew();
        var newest = Snapshot(dir.Path, "snapshot", image, dense, "--store", store, "--json");
        var full = sw.ElapsedMilliseconds;
        contents[newest] = (Bytes(image), Bytes(dense));
        for (var round = 0; round < 20; round++)
        {
            RewritePages(image, random, 40);
            using (var f = File.OpenHandle(dense, FileMode.Open, FileAccess.Write))
            {
                var block = new byte[64 << 10];
                for (var i = 0; i < 6; i++)
                {
                    random.NextBytes(block);
                    RandomAccess.Write(f, block, random.Next(8 * MiB / block.Length) * (long)block.Length);
                }
            }

            var expected = (Bytes(image), Bytes(dense));
            var before = Sessions(store);
            using (var p = Cli.Start(dir.Path, "snapshot", image, dense, "--store", store, "--parent", newest.ToString(), "--json"))
            {
                Thread.Sleep(random.Next(0, (int)Math.Max(20, full * 1.2)));
                try
                {
                    p.Kill();
                }
                catch (InvalidOperationException)
                {
                    // already finished
                }

                p.WaitForExit();
            }

            var after = Sessions(store);
            Assert.All(after, s => Assert.Equal("finished", s.State));
            Assert.True(after.Count == before.Count || after.Count == before.Count + 1, $"round {round}: {before.Count} sessions before, {after.Count} after");
            Assert.StartsWith("ok:", Cli.Ok(dir.Path, "verify", "--trace", store, "--read-data").Stdout);
            if (after.Count > before.Count)
            {
                newest = after[^1].Id;
                contents[newest] = expected;
                var output = dir.Sub("round" + round);
                Cli.Ok(dir.Path, "materialize", newest.ToString(), "--store", store, "--out", output);
                Assert.Equal(expected.Item1, Bytes(Path.Combine(output, "disk.img")));
                Assert.Equal(expected.Item2, Bytes(Path.Combine(output, "mem.bin")));
                TempDir.Remove(output);
            }
        }

        // Write more, then every snapshot kept rebuilds as it was taken.
        RewritePages(image, random, 40);
        newest = Snapshot(dir.Path, "snapshot", image, dense, "--store", store, "--parent", newest.ToString(), "--json");
        contents[newest] = (Bytes(image), Bytes(dense));
        Assert.StartsWith("ok:", Cli.Ok(dir.Path, "verify", "--trace", store, "--read-data").Stdout);
        foreach (var (id, (imageBytes, denseBytes)) in contents)
        {
            var output = dir.Sub("end" + id);
            Cli.Ok(dir.Path, "materialize", id.ToString(), "--store", store, "--out", output);
            Assert.Equal(imageBytes, Bytes(Path.Combine(output, "disk.img")));
            Assert.Equal(denseBytes, Bytes(Path.Combine(output, "mem.bin")));
        }

        Assert.Equal(contents.Keys.Order(), Sessions(store).Select(s => s.Id));
    }

    private static IReadOnlyList<Storage.Catalog.SessionInfo> Sessions(string store)
    {
        using var reader = Storage.TraceReader.Open(store);
        return reader.Sessions();
    }

    /// <summary>
    /// The block fingerprints through the CLI: a child of a snapshot recognises its unchanged blocks by them; a
    /// damaged cache, or --verify-all, makes it SHA-256 every block instead; every snapshot rebuilds byte for byte and
    /// `verify --read-data` finds the store sound.
    /// </summary>
    [Fact]
    public void FingerprintsSpareHashingAndADamagedCacheOnlyCostsTime()
    {
        using var dir = new TempDir();
        var random = new Random(12);
        var image = dir.Sub("disk.img");
        var store = dir.Sub("store");
        MakeSparse(image, 8 * MiB, random, dataPages: 600);
        var ids = new List<long> { Snapshot(dir.Path, "snapshot", image, "--store", store, "--json") };
        var contents = new List<byte[]> { Bytes(image) };
        var byFingerprint = new List<int>();
        foreach (var step in new[] { "kept", "damaged", "verify-all", "kept" })
        {
            RewritePages(image, random, 20);
            var cache = Path.Combine(store, "fingerprints");
            if (step == "damaged")
            {
                var file = Directory.GetFiles(cache).Single(f => Path.GetFileName(f) != "seed");
                var bytes = File.ReadAllBytes(file);
                bytes[^20] ^= 0x40;
                File.WriteAllBytes(file, bytes);
            }

            string[] args = ["snapshot", image, "--store", store, "--parent", ids[^1].ToString(), "--json", .. step == "verify-all" ? new[] { "--verify-all" } : []];
            var r = Cli.Ok(dir.Path, args);
            using var json = JsonDocument.Parse(r.Stdout);
            ids.Add(json.RootElement.GetProperty("id").GetInt64());
            byFingerprint.Add(json.RootElement.GetProperty("files")[0].GetProperty("blocks_by_fingerprint").GetInt32());
            contents.Add(Bytes(image));
        }

        Assert.True(byFingerprint[0] > 0, string.Join(", ", byFingerprint));
        Assert.Equal(0, byFingerprint[1]);
        Assert.Equal(0, byFingerprint[2]);
        Assert.True(byFingerprint[3] > 0, string.Join(", ", byFingerprint));
        for (var i = 0; i < ids.Count; i++)
        {
            var output = dir.Sub("out" + i);
            Cli.Ok(dir.Path, "materialize", ids[i].ToString(), "--store", store, "--out", output);
            Assert.Equal(contents[i], Bytes(Path.Combine(output, "disk.img")));
        }

        Assert.StartsWith("ok:", Cli.Ok(dir.Path, "verify", "--trace", store, "--read-data").Stdout);
        Assert.Contains("--verify-all", Cli.Ok(dir.Path, "snapshot", "--help").Stdout);
    }

    private static long MarkerSnapshot(string output) =>
        long.Parse(File.ReadAllLines(Path.Combine(output, ".diffkeeper-snapshot"))[2]["snapshot ".Length..], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>dir/disk.img, sparse, snapshotted into dir/store, then some pages rewritten and snapshotted with the first as parent; v1: its first bytes.</summary>
    private static (string Image, string Store, long First, long Second, byte[] V1) TwoSnapshots(string dir, int seed, long size, int dataPages, int rewritten)
    {
        var image = Path.Combine(dir, "disk.img");
        var random = new Random(seed);
        MakeSparse(image, size, random, dataPages);
        var v1 = Bytes(image);
        var store = Path.Combine(dir, "store");
        var first = Snapshot(dir, "snapshot", image, "--store", store, "--json");
        RewritePages(image, random, rewritten);
        var second = Snapshot(dir, "snapshot", image, "--store", store, "--parent", first.ToString(), "--json");
        return (image, store, first, second, v1);
    }

    private static long Snapshot(string cwd, params string[] args)
    {
        var r = Cli.Ok(cwd, args);
        using var json = JsonDocument.Parse(r.Stdout);
        return json.RootElement.GetProperty("id").GetInt64();
    }

    /// <summary>A sparse file of <paramref name="size"/> bytes with random data in random 4 KiB pages.</summary>
    private static void MakeSparse(string path, long size, Random random, int dataPages)
    {
        using var f = File.OpenHandle(path, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.SetLength(f, size);
        var page = new byte[4096];
        for (var i = 0; i < dataPages; i++)
        {
            random.NextBytes(page);
            RandomAccess.Write(f, page, random.NextInt64(size / 4096) * 4096);
        }
    }

    private static void RewritePages(string path, Random random, int pages)
    {
        using var f = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite);
        var size = RandomAccess.GetLength(f);
        var page = new byte[4096];
        for (var i = 0; i < pages; i++)
        {
            random.NextBytes(page);
            RandomAccess.Write(f, page, random.NextInt64(size / 4096) * 4096);
        }
    }

    private static byte[] Bytes(string path) => File.ReadAllBytes(path);

    /// <summary>
    /// The data ranges as the file system keeps them: written back and with the file's pages dropped first, since xfs
    /// reports an unwritten extent as data wherever a cached (large) folio covers it.
    /// </summary>
    private static string DataRanges(string path)
    {
        using var f = File.OpenHandle(path);
        Assert.Equal(0, Native.Interop.Libc.Fsync((int)f.DangerousGetHandle()));
        Assert.Equal(0, Native.Interop.Libc.PosixFadvise((int)f.DangerousGetHandle(), 0, 0, Native.Interop.Libc.POSIX_FADV_DONTNEED));
        return string.Join(' ', Storage.BigFiles.BlockIngest.DataRanges(f, 0, RandomAccess.GetLength(f)).Select(r => $"{r.Start}-{r.End}"));
    }

    /// <summary>
    /// The same allocated size, give or take the file system's own metadata: ext4 counts the blocks of a file's
    /// extent tree in st_blocks, and a tree built by writes in another order may have another shape.
    /// </summary>
    private static void AssertAllocatedAlike(string expected, string actual)
    {
        long e = Allocated(expected), a = Allocated(actual);
        Assert.True(Math.Abs(e - a) <= 128 + e / 100, $"{actual} has {a} blocks of 512 bytes allocated, {expected} {e}");
    }

    private static long Allocated(string path) => long.Parse(LoopMount.Run("stat", "-c", "%b", path).Output.Trim(), System.Globalization.CultureInfo.InvariantCulture);
}
