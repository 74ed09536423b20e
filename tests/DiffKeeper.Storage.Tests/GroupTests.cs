using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>Small blobs compressed together (store format 6, "Groups"), against real stores on disk.</summary>
public sealed class GroupTests : IDisposable
{
    private readonly TempDir _dir = new();

    /// <summary>
    /// A writer that stores a record per blob, as one under a size limit does and traces before groups written while
    /// recording did: these tests are about the maintenance pass's grouping.
    /// </summary>
    private static TraceWriter PassGrouped(string trace)
    {
        var w = TraceWriter.Open(trace);
        w.GroupsSmallBlobs = false;
        return w;
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>A source-like file: lines of a small vocabulary, 1 to 12 KiB, deterministic per seed.</summary>
    private static byte[] SourceFile(int seed)
    {
        var rng = new Random(seed);
        string[] words = ["alpha", "beta", "value", "index", "buffer", "result", "handle", "offset", "length", "node", "tree", "state", "reader", "writer"];
        var text = new StringBuilder();
        var target = rng.Next(1024, 12 * 1024);
        while (text.Length < target)
        {
            text.Append(new string(' ', 4 * rng.Next(4))).Append(words[rng.Next(words.Length)]).Append('_').Append(words[rng.Next(words.Length)])
                .Append(" = ").Append(words[rng.Next(words.Length)]).Append('(').Append(rng.Next(1000)).Append(");\n");
        }

        return Encoding.UTF8.GetBytes(text.ToString());
    }

    private static (string, byte[])[] Tree(int count, int version)
    {
        return [.. Enumerable.Range(0, count).Select(i =>
        {
            var content = SourceFile(i);
            if (version > 0 && i % 10 == version % 10)
            {
                content = [.. content, .. Encoding.UTF8.GetBytes($"// edit {version}\n")]; // a tenth of the files change per version
            }

            return ($"src/pkg{i % 4}/f{i:D3}.cs", content);
        })];
    }

    /// <summary>A trace of one session of <paramref name="files"/> source files, after a gc has grouped them.</summary>
    private string GroupedTrace(int files)
    {
        var trace = _dir.Sub("t");
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, Tree(files, 0));
        }

        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        return trace;
    }

    private static List<(long Id, string Rel, byte[] Bytes)> ReadAll(TraceReader r) =>
        r.AllVersions().Where(v => v.Kind == Core.EntryKind.File).Select(v => (v.Id, v.Rel, TraceStoreTests.ReadBack(r, v))).ToList();

    [Fact]
    public void A_writer_groups_small_files_at_its_commit_and_each_reads_back()
    {
        // As `record` stores them (docs/store-format.md, "Groups written while recording"): no record per file, and
        // nothing left for the pass after the session to group.
        var trace = _dir.Sub("t");
        var files = Tree(300, 0);
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, files);
            Assert.False(w.HasMaintenanceWork());
        }

        using (var r = TraceReader.Open(trace))
        {
            var blobs = r.AllBlobs().ToList();
            Assert.Equal(300, blobs.Count(b => b.IsSlice));
            Assert.DoesNotContain(blobs, b => b.Codec is BlobCodec.Raw or BlobCodec.Zstd);
            Assert.InRange(blobs.Count(b => b.Codec == BlobCodec.Group), 2, 4); // 1 MiB each
            Assert.Equal(files.OrderBy(f => f.Item1).Select(f => f.Item2), ReadAll(r).OrderBy(v => v.Rel).Select(v => v.Bytes));
            Assert.True(StoreFiles.PackBytes(trace) < files.Sum(f => f.Item2.Length) / 4);
            Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        }

        var gc = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(0, gc.Grouping!.Groups);
    }

    [Fact]
    public void Full_groups_encoded_beside_the_writer_are_given_up_with_an_abandoned_transaction_and_the_next_ones_read_back()
    {
        // 1,000 files of up to 12 KiB in one transaction: several full groups go to the encoder's thread while the
        // writer goes on; abandoning drops them with their rows, and the groups written after it are whole.
        var trace = _dir.Sub("t");
        var first = Tree(1000, 0);
        var second = Tree(400, 3);
        using (var w = TraceWriter.Open(trace))
        {
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            TraceStoreTests.AddFile(w, sid, roots[0], _dir.Path, "kept", SourceFile(5000), 1);
            w.Commit();
            long seq = 1;
            foreach (var (rel, content) in first)
            {
                TraceStoreTests.AddFile(w, sid, roots[0], _dir.Path, rel, content, ++seq);
            }

            Assert.Equal(1, w.AbandonPending(sid));
            w.AddEvent(sid, new NewEvent(2, 2, ChangeOp.Lost, null, null, null, null, null, "storage failed"));
            w.FinishSession(sid, 3, 0, 1);
        }

        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, second);
        }

        using var r = TraceReader.Open(trace);
        var sessions = r.Sessions();
        Assert.Equal("kept", Assert.Single(r.StateAt(sessions[0], long.MaxValue)).Rel);
        var blobs = r.AllBlobs().ToList();
        Assert.Equal(second.Length + 1, blobs.Count(b => b.IsSlice || b.Codec is BlobCodec.Raw or BlobCodec.Zstd));
        Assert.InRange(blobs.Count(b => b.Codec == BlobCodec.Group), 2, 4);
        var back = r.StateAt(sessions[1], long.MaxValue).ToDictionary(v => v.Rel, v => TraceStoreTests.ReadBack(r, v));
        Assert.All(second, f => Assert.Equal(f.Item2, back[f.Item1]));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void A_group_of_one_small_file_is_stored_as_the_file_alone()
    {
        var trace = _dir.Sub("t");
        using (var w = TraceWriter.Open(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, ("one.txt", SourceFile(1)));
        }

        using var r = TraceReader.Open(trace);
        var blob = Assert.Single(r.AllBlobs());
        Assert.Equal(BlobCodec.Zstd, blob.Codec);
        Assert.Equal(SourceFile(1), Assert.Single(ReadAll(r)).Bytes);
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void Small_files_are_grouped_read_back_one_by_one_and_verify()
    {
        var trace = _dir.Sub("t");
        var files = Tree(300, 0);
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, files);
        }

        var before = StoreFiles.PackBytes(trace);
        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        var after = StoreFiles.PackBytes(trace);

        Assert.Equal(300, result.Grouping!.Members);
        Assert.True(result.Grouping.Groups >= 2, $"{result.Grouping.Groups} groups for {files.Sum(f => f.Item2.Length)} bytes");
        Assert.True(after < before * 0.8, $"{after} of {before} pack bytes after grouping");

        using var r = TraceReader.Open(trace);
        var blobs = r.AllBlobs().ToList();
        Assert.Equal(300, blobs.Count(b => b.IsSlice));
        Assert.All(blobs.Where(b => b.Codec == BlobCodec.Group), g => Assert.InRange(g.RawLength, 1, PackFormat.MaxGroupLength));
        var back = ReadAll(r).ToDictionary(v => v.Rel, v => v.Bytes);
        Assert.All(files, f => Assert.Equal(f.Item2, back[f.Item1]));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);

        // One member alone, by a reader that decoded nothing before.
        using var fresh = TraceReader.Open(trace);
        var one = fresh.AllVersions().Single(v => v.Rel == "src/pkg1/f101.cs");
        Assert.Equal(files[101].Item2, TraceStoreTests.ReadBack(fresh, one));
    }

    [Fact]
    public void Members_that_become_deltas_are_regrouped_and_every_version_still_reads()
    {
        var trace = _dir.Sub("t");
        var sessions = Enumerable.Range(0, 8).Select(v => Tree(200, v)).ToList(); // a tenth edited per session: due after the sixth
        foreach (var files in sessions)
        {
            using (var w = PassGrouped(trace))
            {
                TraceStoreTests.WriteSession(w, _dir.Path, files);
            }

            StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);

            // A regrouped group's row goes in the pass that regrouped it, without a second sweep.
            using var pass = TraceReader.Open(trace);
            var rows = pass.AllBlobs().ToList();
            Assert.All(rows.Where(b => b.Codec == BlobCodec.Group), g => Assert.Contains(rows, b => b.IsSlice && b.Bases[0] == g.BlobRowId));
        }

        using var r = TraceReader.Open(trace);
        var all = ReadAll(r);
        var expected = sessions.SelectMany(s => s).ToList();
        Assert.Equal(expected.Count, all.Count);
        for (var i = 0; i < all.Count; i++)
        {
            Assert.Equal(expected[i].Item1, all[i].Rel);
            Assert.Equal(expected[i].Item2, all[i].Bytes);
        }

        var blobs = r.AllBlobs().ToList();
        Assert.Contains(blobs, b => b.IsDelta);
        Assert.Contains(blobs, b => b.IsSlice);
        // Every group left is mostly live: the ones that lost a fifth of their bytes were regrouped.
        foreach (var g in blobs.Where(b => b.Codec == BlobCodec.Group))
        {
            var live = blobs.Where(b => b.IsSlice && b.Bases[0] == g.BlobRowId).Sum(b => (long)b.RawLength);
            Assert.True(live >= Grouper.RegroupBelow * g.RawLength, $"group {g.BlobRowId}: {live} of {g.RawLength} bytes live");
        }

        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    /// <summary>
    /// Regression (the pass after a write storm's session grew its packs 707 → 997 KB): a file appended to in many
    /// exact versions leaves, in the groups written while recording, its states as overlapping slices (each a prefix
    /// of the next). The pass counted their raw lengths: it judged the shorter states superseded enough to re-encode
    /// as deltas (each ~100 bytes against ~0 in the group), dissolved the small groups and wrote every state again
    /// in full. A pass must leave the packs no larger, and every version as it was.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    public void The_states_of_a_grown_file_stay_shared_and_a_pass_never_grows_the_packs(int seed)
    {
        var trace = _dir.Sub("t");
        var rng = new Random(seed);
        var grown = new List<byte>();
        var expected = new List<(string Rel, byte[] Bytes)>();
        using (var w = TraceWriter.Open(trace))
        {
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            long seq = 0;
            for (var state = 0; state < 400; state++)
            {
                grown.AddRange(Encoding.UTF8.GetBytes($"{state:D5} {rng.Next(100)} value={rng.Next(1000)} state=ready\n"));
                TraceStoreTests.AddFile(w, sid, roots[0], _dir.Path, "log/app.log", [.. grown], ++seq);
                expected.Add(("log/app.log", [.. grown]));
                if (state % 37 == 36)
                {
                    w.Commit(); // the recorder commits while the command runs: a group per commit
                }
            }

            w.Commit();
        }

        // New small files of a later session: the small groups above are dissolved to be regrouped with them.
        var later = Tree(40, 0);
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, later);
        }

        expected.AddRange(later);
        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.True(result.PackBytesAfter <= result.PackBytesBefore, $"packs grew {result.PackBytesBefore} → {result.PackBytesAfter}");
        using var r = TraceReader.Open(trace);
        var all = ReadAll(r);
        Assert.Equal(expected.Count, all.Count);
        for (var i = 0; i < all.Count; i++)
        {
            Assert.Equal(expected[i].Rel, all[i].Rel);
            Assert.Equal(expected[i].Bytes, all[i].Bytes);
        }

        // The states still share their bytes: the slices sum to far more than the groups hold.
        var blobs = r.AllBlobs().ToList();
        Assert.True(blobs.Where(b => b.IsSlice).Sum(b => (long)b.RawLength) > 4 * blobs.Where(b => b.Codec == BlobCodec.Group).Sum(b => (long)b.RawLength));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    /// <summary>
    /// A file appended to within one commit replaces its tail chunk at every version, but each old tail is a shorter
    /// state sharing the new one's bytes in the group: nothing for compaction, so `record` skips its pass (it ran for
    /// 0.2-0.4 s after a write storm and found nothing worth doing).
    /// </summary>
    [Fact]
    public void Appends_within_one_group_bring_no_pass()
    {
        var trace = _dir.Sub("t");
        var grown = new List<byte>();
        using (var w = TraceWriter.Open(trace))
        {
            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            for (var state = 0; state < 200; state++)
            {
                grown.AddRange(Encoding.UTF8.GetBytes($"{state:D5} appended line\n"));
                TraceStoreTests.AddFile(w, sid, roots[0], _dir.Path, "log/app.log", [.. grown], state + 1);
            }

            w.Commit();
            Assert.False(w.HasMaintenanceWork());
        }

        // A file stored on its own record, then rewritten: its old record is compaction's to re-encode.
        using (var w = PassGrouped(trace))
        {
            var source = SourceFile(3);
            TraceStoreTests.WriteSession(w, _dir.Path, ("src/a.cs", source));
            Assert.False(w.HasMaintenanceWork());
            source[100] = (byte)'#';
            TraceStoreTests.WriteSession(w, _dir.Path, ("src/a.cs", source));
            Assert.True(w.HasMaintenanceWork());
        }
    }

    /// <summary>
    /// Small whole blobs beside much more in their pack (the stray chunks of an untar's 14 MB pack): grouping them
    /// would leave their records dead in a pack no repack takes, and add the group. No pass for them, and a pass run
    /// anyway leaves the packs as they are.
    /// </summary>
    [Fact]
    public void Small_blobs_whose_records_no_repack_would_free_are_left_whole()
    {
        var trace = _dir.Sub("t");
        var big = new byte[4 << 20];
        new Random(5).NextBytes(big); // incompressible: 4 MiB of live records beside the small ones
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, [("data/blob.bin", big), .. Tree(60, 0)]);
            Assert.False(w.HasMaintenanceWork());
        }

        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(0, result.Grouping!.Members);
        Assert.True(result.PackBytesAfter <= result.PackBytesBefore, $"packs grew {result.PackBytesBefore} → {result.PackBytesAfter}");

        // Without the big file beside them, the same files are grouped: their records go with the repack.
        var other = _dir.Sub("t2");
        using (var w = PassGrouped(other))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, Tree(60, 0));
            Assert.True(w.HasMaintenanceWork());
        }

        result = StoreMaintenance.Run(other, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(60, result.Grouping!.Members);
        Assert.True(result.PackBytesAfter < result.PackBytesBefore);
    }

    [Fact]
    public void A_flipped_byte_in_a_group_damages_every_member_and_verify_names_them()
    {
        var trace = GroupedTrace(40);
        BlobLocation group;
        int members;
        using (var r = TraceReader.Open(trace))
        {
            var blobs = r.AllBlobs().ToList();
            group = Assert.Single(blobs, b => b.Codec == BlobCodec.Group);
            members = blobs.Count(b => b.IsSlice);
        }

        var pack = Path.Combine(trace, PackFormat.RelativePath(group.PackId));
        var bytes = File.ReadAllBytes(pack);
        bytes[group.Offset + PackFormat.RecordHeaderSize + 40] ^= 0x20;
        File.WriteAllBytes(pack, bytes);

        using var reader = TraceReader.Open(trace);
        foreach (var readData in new[] { false, true })
        {
            var report = TraceVerifier.Verify(reader, readData);
            Assert.Equal(members, report.Damages.Select(d => d.VersionId).Distinct().Count());
        }

        var slice = reader.AllBlobs().First(b => b.IsSlice);
        var e = Assert.Throws<BlobDamagedException>(() => reader.Blobs.Read(slice, new byte[slice.RawLength]));
        Assert.Contains("its group", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_slice_outside_its_group_is_damage_not_a_wrong_answer()
    {
        var trace = GroupedTrace(20);
        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            db.Execute("UPDATE blobs SET offset = offset + 1 WHERE id = (SELECT min(id) FROM blobs WHERE codec = 5)");
        }

        using var reader = TraceReader.Open(trace);
        var report = TraceVerifier.Verify(reader, readData: true);
        Assert.Single(report.Damages);
        Assert.Contains("SHA-256", report.Damages[0].Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void A_format_5_trace_reads_as_is_and_its_first_writer_migrates_it_to_7_and_groups_it()
    {
        var trace = _dir.Sub("t");
        var files = Tree(50, 0);
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, files);
        }

        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            // What the format-5 code wrote: the same tables, no groups, no grouping mark.
            db.Execute("ALTER TABLE events DROP COLUMN run; UPDATE meta SET value = '5' WHERE key = 'format_version'");
        }

        using (var r = TraceReader.Open(trace))
        {
            Assert.Equal(files.Length, ReadAll(r).Count);
            Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
        }

        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true))
        using (var v = db.Prepare("SELECT (SELECT value FROM meta WHERE key = 'format_version'), (SELECT value FROM meta WHERE key = 'grouped_through_blob')"))
        {
            Assert.True(v.Step());
            Assert.Equal("7", v.StringOrNull(0)); // CatalogSchema.FormatVersion
            Assert.NotNull(v.StringOrNull(1));
        }

        using var after = TraceReader.Open(trace);
        Assert.Contains(after.AllBlobs(), b => b.IsSlice);
        var back = ReadAll(after).ToDictionary(v => v.Rel, v => v.Bytes);
        Assert.All(files, f => Assert.Equal(f.Item2, back[f.Item1]));
    }

    /// <summary>Files of random bytes padded with zeros: each compresses by half on its own and gains nothing in a group.</summary>
    private static (string, byte[])[] Ungroupable(int count)
    {
        var rng = new Random(7);
        return [.. Enumerable.Range(0, count).Select(i =>
        {
            var content = new byte[8192];
            rng.NextBytes(content.AsSpan(0, 4096));
            return ($"bin/f{i:D3}.dat", content);
        })];
    }

    [Fact]
    public void Small_blobs_judged_not_worth_a_group_never_bring_record_back_for_a_pass()
    {
        var trace = _dir.Sub("t");
        using (var w = PassGrouped(trace))
        {
            TraceStoreTests.WriteSession(w, _dir.Path, Ungroupable(80)); // 640 KiB of small zstd blobs
            Assert.True(w.HasMaintenanceWork());
        }

        var result = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(0, result.Grouping!.Members);
        using (var w = PassGrouped(trace))
        {
            Assert.False(w.HasMaintenanceWork()); // they lie below grouped_through_blob now

            // New small blobs of a later session are new to grouping: enough of them bring a pass back.
            TraceStoreTests.WriteSession(w, _dir.Path, Tree(100, 0));
            Assert.True(w.HasMaintenanceWork());
        }

        result = StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        Assert.Equal(100, result.Grouping!.Members); // the source files, not the refused blobs again
        using var r = TraceReader.Open(trace);
        Assert.Equal(80, r.AllBlobs().Count(b => b.Codec == BlobCodec.Zstd));
        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    [Fact]
    public void A_member_read_alone_decodes_its_group_only_to_its_end_and_stats_count_that()
    {
        var trace = GroupedTrace(150);
        using var r = TraceReader.Open(trace);
        var blobs = r.AllBlobs().ToList();
        var group = blobs.First(b => b.Codec == BlobCodec.Group);
        var first = blobs.Where(b => b.IsSlice && b.Bases[0] == group.BlobRowId).MinBy(b => b.Offset)!;

        // Damage the group's last bytes: only a read that decodes that far can see them.
        var pack = Path.Combine(trace, PackFormat.RelativePath(group.PackId));
        var bytes = File.ReadAllBytes(pack);
        var at = group.Offset + PackFormat.RecordHeaderSize + group.StoredLength - 8;
        bytes[at] ^= 0x55;
        File.WriteAllBytes(pack, bytes);
        using (var fresh = TraceReader.Open(trace))
        {
            var one = fresh.AllVersions().Single(v => v.Kind == Core.EntryKind.File && ExtentMapRows(v).Contains(first.BlobRowId));
            Assert.Equal(one.Size, TraceStoreTests.ReadBack(fresh, one).Length); // checked by its own SHA-256
            Assert.False(TraceVerifier.Verify(fresh, readData: true).Ok);
        }

        bytes[at] ^= 0x55;
        File.WriteAllBytes(pack, bytes);
        var worst = TraceStatistics.Compute(r).WorstRebuild!;
        // At most a group (1 MiB) for a file under 64 KiB counted as 64 KiB, as the rebuild bound counts it.
        Assert.InRange(worst.Ratio, 1, (double)PackFormat.MaxGroupLength / RebuildCost.Floor);
        Assert.True(worst.DecodedBytes < group.RawLength + 64 * 1024, worst.ToString());
    }

    private static long[] ExtentMapRows(Catalog.VersionRecord v) =>
        ExtentMap.TryDecode(v.Extents!, v.Size, out var extents) ? [.. extents.Select(e => e.BlobRowId)] : [];
}
