using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;
using FsCheck;
using FsCheck.Fluent;

namespace DiffKeeper.Storage.Tests;

/// <summary>Compaction, prune, garbage collection and the format migration, against real stores on disk.</summary>
public sealed class MaintenanceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Each content becomes one session holding one version of "f" (the way a store gathers versions).</summary>
    private static void WriteVersions(string trace, string work, IEnumerable<byte[]> versions)
    {
        using var w = TraceWriter.Open(trace);
        foreach (var v in versions)
        {
            TraceStoreTests.WriteSession(w, work, ("f", v));
        }
    }

    private static List<byte[]> ReadAll(string trace)
    {
        using var r = TraceReader.Open(trace);
        return r.AllVersions().Select(v => TraceStoreTests.ReadBack(r, v)).ToList();
    }

    /// <summary>W1 of the anchor benchmarks, smaller: random bytes, each version rewrites 10% in 10 regions.</summary>
    internal static List<byte[]> TenPercentEdits(int size, int count, int seed)
    {
        var rng = new Random(seed + 1000); // not the stream RandomBytes(seed) draws from, or edits would repeat old bytes
        var current = CodecTests.RandomBytes(size, seed);
        var list = new List<byte[]> { current };
        for (var i = 1; i < count; i++)
        {
            current = (byte[])current.Clone();
            for (var stripe = 0; stripe < 10; stripe++)
            {
                var length = size / 100;
                var at = (stripe * size / 10) + rng.Next(size / 10 - length);
                rng.NextBytes(current.AsSpan(at, length));
            }

            list.Add(current);
        }

        return list;
    }

    [Fact]
    public void Random_edit_scripts_rebuild_byte_for_byte_after_compaction_under_every_codec()
    {
        var run = 0;
        var property = Prop.ForAll(BsDiffPropertyTests.Scripts(600_000).ToArbitrary(), Gen.Choose(1, 4).ToArbitrary(), (script, interval) =>
        {
            var versions = new List<byte[]> { script.Start() };
            foreach (var edits in script.Versions)
            {
                versions.Add(BsDiffPropertyTests.Apply(versions[^1], edits));
            }

            foreach (var codec in new BlobCodec?[] { BlobCodec.ZstdDelta, BlobCodec.BsDiff, null })
            {
                var trace = _dir.Sub($"p{run++}");
                WriteVersions(trace, _dir.Path, versions);
                StoreMaintenance.Run(trace, new MaintenanceOptions(codec, interval, 0.5), DateTimeOffset.UtcNow);
                var back = ReadAll(trace);
                using var r = TraceReader.Open(trace);
                if (!back.Zip(versions).All(p => p.First.AsSpan().SequenceEqual(p.Second)) || !TraceVerifier.Verify(r, readData: true).Ok)
                {
                    return false;
                }

                Directory.Delete(trace, recursive: true);
            }

            return true;
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(20), property);
    }

    [Fact]
    public void Compaction_stores_older_versions_as_deltas_and_keeps_the_newest_whole()
    {
        var trace = _dir.Sub("t");
        var versions = TenPercentEdits(1 << 20, 20, 7);
        WriteVersions(trace, _dir.Path, versions);
        var before = StoreFiles.PackBytes(trace);
        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(BlobCodec.ZstdDelta, 20, 0.5), DateTimeOffset.UtcNow);

        Assert.Equal(versions, ReadAll(trace));
        var after = StoreFiles.PackBytes(trace);
        Assert.True(result.Compaction!.Encoded > 0);
        // The information bound: one whole version plus the 10% each later version rewrote.
        Assert.InRange(after, (1 << 20) + (19 * (1 << 20) / 10), 1.05 * ((1 << 20) + (19 * (1 << 20) / 10)));
        Assert.True(after < before / 5, $"{after} of {before} bytes left");

        using var r = TraceReader.Open(trace);
        var newest = r.AllVersions()[^1];
        Assert.True(ExtentMap.TryDecode(newest.Extents, newest.Size, out var extents));
        Assert.All(extents, e => Assert.False(r.Blob(e.BlobRowId).IsDelta));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void The_snapshot_interval_bounds_every_delta_chain()
    {
        var trace = _dir.Sub("t");
        var versions = TenPercentEdits(300_000, 12, 8);
        WriteVersions(trace, _dir.Path, versions);
        StoreMaintenance.Run(trace, new MaintenanceOptions(BlobCodec.ZstdDelta, 3, 0.5), DateTimeOffset.UtcNow);

        Assert.Equal(versions, ReadAll(trace));
        using var r = TraceReader.Open(trace);
        var blobs = r.AllBlobs().ToDictionary(b => b.BlobRowId);
        int Chain(long row) => blobs[row].Bases.Select(b => 1 + Chain(b)).DefaultIfEmpty(0).Max();
        Assert.All(blobs.Keys, row => Assert.InRange(Chain(row), 0, 2));
        Assert.Contains(blobs.Values, b => b.IsDelta);
    }

    [Theory]
    [InlineData(3.0, true)]
    [InlineData(RebuildCost.DefaultBound, true)]
    public void The_rebuild_bound_bounds_what_rebuilding_any_version_decodes(double bound, bool afterEachSession)
    {
        // As `record` leaves it (a pass after each session) or as one `gc` after all of them.
        var trace = _dir.Sub("t");
        var versions = TenPercentEdits(512 << 10, 20, 11);
        var options = new MaintenanceOptions(BlobCodec.ZstdDelta, null, 0.9) { RebuildBound = bound };
        foreach (var chunk in versions.Chunk(afterEachSession ? 1 : versions.Count))
        {
            WriteVersions(trace, _dir.Path, chunk);
            StoreMaintenance.Run(trace, options, DateTimeOffset.UtcNow);
        }

        Assert.Equal(versions, ReadAll(trace));
        using var r = TraceReader.Open(trace);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        var blobs = r.AllBlobs().ToDictionary(b => b.BlobRowId);
        var bases = blobs.Values.Where(b => b.IsDelta).ToDictionary(b => b.BlobRowId, b => b.Bases);
        foreach (var v in r.AllVersions())
        {
            Assert.True(ExtentMap.TryDecode(v.Extents, v.Size, out var extents));
            var decoded = extents.SelectMany(e => RebuildCost.Closure(e.BlobRowId, bases)).Distinct().Sum(row => (long)blobs[row].RawLength);
            var budget = RebuildCost.Budget(bound, v.Size);
            Assert.True(decoded <= budget, $"version {v.Id} decodes {decoded} bytes, more than {budget}");
        }

        var worst = TraceStatistics.Compute(r).WorstRebuild!;
        Assert.True(worst.DecodedBytes <= RebuildCost.Budget(bound, worst.Size), $"{worst}");
        Assert.True(worst.Ratio > 1, $"{worst}: no version decodes through a delta");
        if (bound >= RebuildCost.DefaultBound)
        {
            // No whole copy beyond the newest: the information bound (one version plus the 10% each later one rewrote).
            var information = (512 << 10) + (19 * (512 << 10) / 10);
            Assert.True(StoreFiles.PackBytes(trace) <= 1.06 * information, $"{StoreFiles.PackBytes(trace)} pack bytes, bound {information}");
        }
    }

    [Fact]
    public void A_chunk_that_comes_back_in_the_newest_version_is_stored_whole_again()
    {
        var trace = _dir.Sub("t");
        var a = TenPercentEdits(200_000, 2, 9);
        WriteVersions(trace, _dir.Path, a);
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        WriteVersions(trace, _dir.Path, [a[0]]); // the first content again: its chunks are deltas by now

        using var r = TraceReader.Open(trace);
        var newest = r.AllVersions()[^1];
        Assert.True(ExtentMap.TryDecode(newest.Extents, newest.Size, out var extents));
        Assert.All(extents, e => Assert.False(r.Blob(e.BlobRowId).IsDelta));
        Assert.Equal(a[0], TraceStoreTests.ReadBack(r, newest));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void Prune_keep_last_two_of_twenty_frees_most_bytes_and_keeps_the_rest_readable()
    {
        var trace = _dir.Sub("t");
        var versions = TenPercentEdits(1 << 20, 20, 10);
        WriteVersions(trace, _dir.Path, versions);
        var before = StoreFiles.PackBytes(trace);

        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(null, 10, 0.5, new PrunePolicy(2, null)), DateTimeOffset.UtcNow);

        Assert.Equal(18, result.VersionsPruned);
        var after = StoreFiles.PackBytes(trace);
        Assert.True(after <= before * 0.2, $"{after} of {before} bytes left");
        using var r = TraceReader.Open(trace);
        var all = r.AllVersions();
        Assert.Equal(Enumerable.Repeat(true, 18).Concat([false, false]), all.Select(v => v.Pruned));
        Assert.Equal(versions[18], TraceStoreTests.ReadBack(r, all[18]));
        Assert.Equal(versions[19], TraceStoreTests.ReadBack(r, all[19]));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void Prune_never_drops_the_newest_version_of_a_path()
    {
        var trace = _dir.Sub("t");
        WriteVersions(trace, _dir.Path, [[1, 2, 3], [4, 5, 6]]);
        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(Prune: new PrunePolicy(null, 0)), DateTimeOffset.UtcNow.AddDays(1));
        Assert.Equal(1, result.VersionsPruned);
        using (var r = TraceReader.Open(trace))
        {
            var all = r.AllVersions();
            Assert.True(all[0].Pruned);
            Assert.Equal([4, 5, 6], TraceStoreTests.ReadBack(r, all[1]));
        }

        Assert.Throws<DiffKeeperException>(() => Pruner.Select(null!, new PrunePolicy(0, null), DateTimeOffset.UtcNow));
    }

    [Fact]
    public void A_wrong_delta_base_is_damage_for_verify_and_for_reads()
    {
        var trace = _dir.Sub("t");
        WriteVersions(trace, _dir.Path, TenPercentEdits(300_000, 3, 11));
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        long victim, other;
        using (var r = TraceReader.Open(trace))
        {
            var blobs = r.AllBlobs().ToList();
            var delta = blobs.First(b => b.IsDelta);
            victim = delta.BlobRowId;
            other = blobs.First(b => !b.IsDelta && !delta.Bases.Contains(b.BlobRowId)).BlobRowId;
        }

        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            using var set = db.Prepare("UPDATE blobs SET bases = ?2 WHERE id = ?1");
            set.Bind(1, victim).Bind(2, PackFormat.EncodeBases([other])).Run();
        }

        using var reader = TraceReader.Open(trace);
        foreach (var readData in new[] { false, true })
        {
            var report = TraceVerifier.Verify(reader, readData);
            Assert.NotEmpty(report.Damages);
            Assert.Contains(report.Damages, d => d.Reason.Contains("base digest mismatch", StringComparison.Ordinal));
            Assert.All(report.Damages, d => Assert.Equal("f", d.Path));
            Assert.All(report.Damages, d => Assert.Contains("damaged", d.Reason, StringComparison.Ordinal));
        }

        var loc = reader.Blob(victim);
        Assert.Throws<BlobDamagedException>(() => reader.Blobs.Read(loc, new byte[loc.RawLength]));
    }

    [Fact]
    public void A_flipped_byte_in_a_delta_base_damages_every_version_decoded_through_it()
    {
        var trace = _dir.Sub("t");
        WriteVersions(trace, _dir.Path, TenPercentEdits(300_000, 4, 12));
        StoreMaintenance.Run(trace, new MaintenanceOptions(BlobCodec.ZstdDelta, 10, 1.0), DateTimeOffset.UtcNow);
        BlobLocation victim;
        using (var r = TraceReader.Open(trace))
        {
            var blobs = r.AllBlobs().ToList();
            victim = blobs.First(b => !b.IsDelta && blobs.Any(d => d.Bases.Contains(b.BlobRowId)));
        }

        var pack = Path.Combine(trace, PackFormat.RelativePath(victim.PackId));
        var bytes = File.ReadAllBytes(pack);
        bytes[victim.Offset + PackFormat.RecordHeaderSize + 10] ^= 0x20;
        File.WriteAllBytes(pack, bytes);

        using var reader = TraceReader.Open(trace);
        foreach (var readData in new[] { false, true })
        {
            var report = TraceVerifier.Verify(reader, readData);
            // The newest version holds the base itself; every older one decodes through it.
            Assert.Equal(4, report.Damages.Select(d => d.VersionId).Distinct().Count());
            Assert.All(report.Damages, d => Assert.Equal("f", d.Path));
            Assert.Contains(report.Damages, d => d.BlobId == victim.Id.ToHex() && d.Reason.Contains("CRC-32C", StringComparison.Ordinal));
        }
    }

    /// <summary>A fixture of an older format reads as is, is migrated to the current one by the first writer, and still reads after gc.</summary>
    private void ReadsAsIsThenMigrates(string fixture, Action<string> check)
    {
        var trace = _dir.Sub(fixture);
        StoreFiles.CopyDirectory(Path.Combine(AppContext.BaseDirectory, "Fixtures", fixture), trace);
        check(trace);
        using (var w = TraceWriter.Open(trace))
        {
            using var version = w.Database.Prepare("SELECT value FROM meta WHERE key = 'format_version'");
            Assert.True(version.Step());
            Assert.Equal(CatalogSchema.FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture), version.String(0));
        }

        check(trace);
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        check(trace);
    }

    [Fact]
    public void A_format_2_trace_reads_as_is_and_is_migrated_by_the_first_writer()
    {
        ReadsAsIsThenMigrates("format-v2", Check);

        static void Check(string trace)
        {
            using var r = TraceReader.Open(trace);
            var s = r.Session(null);
            var end = r.StateAt(s, long.MaxValue).ToDictionary(v => v.Rel);
            Assert.Equal("hello\nagain\n"u8.ToArray(), TraceStoreTests.ReadBack(r, end["sub/a.txt"]));
            Assert.Equal("hello\nagain\n"u8.ToArray(), TraceStoreTests.ReadBack(r, end["hard"]));
            Assert.All(end.Values, v => Assert.Null(v.Link)); // format 2 recorded hard links as separate files
            Assert.Equal("sub/a.txt", end["link"].Target);
            Assert.False(end.ContainsKey("old.txt"));
            Assert.Equal("before\n"u8.ToArray(), TraceStoreTests.ReadBack(r, r.StateAt(s, 0).Single(v => v.Rel == "old.txt")));
            Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        }
    }

    [Fact]
    public void A_format_1_trace_reads_as_is_and_is_migrated_by_the_first_writer()
    {
        ReadsAsIsThenMigrates("format-v1", Check);

        static void Check(string trace)
        {
            using var r = TraceReader.Open(trace);
            var s = r.Session(null);
            var end = r.StateAt(s, long.MaxValue).ToDictionary(v => v.Rel);
            Assert.Equal("hello\nagain\n"u8.ToArray(), TraceStoreTests.ReadBack(r, end["sub/a.txt"]));
            Assert.Equal(Enumerable.Repeat((byte)'x', 100_000), TraceStoreTests.ReadBack(r, end["big.txt"]));
            Assert.Equal("sub/a.txt", end["link"].Target);
            Assert.False(end.ContainsKey("old.txt"));
            Assert.Equal("before\n"u8.ToArray(), TraceStoreTests.ReadBack(r, r.StateAt(s, 0).Single(v => v.Rel == "old.txt")));
            Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        }
    }
}
