using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Deltas written while recording (docs/store-format.md, "Deltas written while recording"): a baseline's changed
/// small file is stored as a delta against the version it inherits, within the rebuild bound, against real traces on
/// disk.
/// </summary>
public sealed class IngestDeltaTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A source-like file: lines of a small vocabulary, 1 to 20 KiB (so some are two chunks), deterministic per seed.</summary>
    private static List<string> SourceLines(int seed)
    {
        var rng = new Random(seed);
        string[] words = ["alpha", "beta", "value", "index", "buffer", "result", "handle", "offset", "length", "node", "tree", "state", "reader", "writer"];
        var lines = new List<string>();
        var target = rng.Next(1024, 20 * 1024);
        var size = 0;
        while (size < target)
        {
            var line = new string(' ', 4 * rng.Next(4)) + words[rng.Next(words.Length)] + "_" + words[rng.Next(words.Length)] + " = " +
                words[rng.Next(words.Length)] + "(" + rng.Next(1000) + ");";
            lines.Add(line);
            size += line.Length + 1;
        }

        return lines;
    }

    /// <summary>
    /// W3 in small: <paramref name="count"/> files; each version edits a tenth of them (a line replaced, one
    /// inserted), deletes one and adds one.
    /// </summary>
    private static List<Dictionary<string, byte[]>> Versions(int count, int versions)
    {
        var files = Enumerable.Range(0, count).ToDictionary(i => $"src/pkg{i % 4}/f{i:D3}.cs", SourceLines);
        var rng = new Random(7);
        var result = new List<Dictionary<string, byte[]>>();
        for (var v = 0; v < versions; v++)
        {
            if (v > 0)
            {
                var names = files.Keys.Order(StringComparer.Ordinal).ToList();
                foreach (var name in names.Where((_, i) => i % 10 == v % 10))
                {
                    var lines = files[name];
                    lines[rng.Next(lines.Count)] = $"    edited_{v} = value({rng.Next(1000)});";
                    lines.Insert(rng.Next(lines.Count), $"// line {v}");
                }

                files.Remove(names[rng.Next(names.Count)]);
                files[$"src/pkg9/new{v:D3}.cs"] = SourceLines(1000 + v);
            }

            result.Add(files.ToDictionary(f => f.Key, f => Encoding.UTF8.GetBytes(string.Join('\n', f.Value) + "\n")));
        }

        return result;
    }

    /// <summary>One session whose baseline is <paramref name="tree"/>, inheriting the last one's state as `record` does.</summary>
    private void Record(TraceWriter w, Dictionary<string, byte[]> tree)
    {
        var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
        w.InheritBaseline(sid);
        foreach (var (rel, content) in tree.OrderBy(f => f.Key, StringComparer.Ordinal))
        {
            var path = Path.Combine(_dir.Path, "src-" + Guid.NewGuid().ToString("N"));
            File.WriteAllBytes(path, content);
            using var h = File.OpenHandle(path);
            var pathId = w.PathId(roots[0], rel);
            var c = FileIngest.Ingest(w, h, content.Length, previous: () => w.InheritedExtents(pathId));
            w.AddVersion(sid, new NewVersion(pathId, 0, 0, EntryKind.File, 0x1A4, 0, 0, 123, c.Size, c.ContentId, null, c.Extents));
            File.Delete(path);
        }

        w.EndBaseline(sid);
        w.Commit();
    }

    /// <summary>Every session's end state reads back byte for byte as its tree, and the trace verifies with its data.</summary>
    private static void AssertEveryMoment(string trace, List<Dictionary<string, byte[]>> versions)
    {
        using var r = TraceReader.Open(trace);
        var sessions = r.Sessions();
        Assert.Equal(versions.Count, sessions.Count);
        for (var s = 0; s < sessions.Count; s++)
        {
            var state = r.StateAt(sessions[s], long.MaxValue).ToDictionary(v => v.Rel, v => TraceStoreTests.ReadBack(r, v));
            Assert.Equal(versions[s].Keys.Order(StringComparer.Ordinal), state.Keys.Order(StringComparer.Ordinal));
            Assert.All(versions[s], f => Assert.True(f.Value.AsSpan().SequenceEqual(state[f.Key]), $"session {s + 1}: {f.Key}"));
        }

        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }

    private static long DeltaDepth(TraceReader r, long row)
    {
        var loc = r.Blob(row);
        return loc.IsDelta ? 1 + loc.Bases.Max(b => DeltaDepth(r, b)) : 0;
    }

    [Fact]
    public void A_changed_small_file_is_stored_as_a_delta_against_the_version_its_baseline_inherits()
    {
        var trace = _dir.Sub("t");
        var versions = Versions(120, 6);
        using (var w = TraceWriter.Open(trace))
        {
            foreach (var tree in versions)
            {
                Record(w, tree);
            }

            // 12 edited files a session: a delta each, but where the edit leaves a two-chunk file's first chunk as it
            // was, or where a delta of a small file would not save a quarter of it alone.
            Assert.InRange(w.DeltasStored, 5 * 12 * 3 / 4, 5 * 12 * 2);
        }

        AssertEveryMoment(trace, versions);
        using (var r = TraceReader.Open(trace))
        {
            var last = r.Sessions()[^1];
            var edited = r.StateAt(last, long.MaxValue).Single(v => v.Rel == "src/pkg1/f005.cs"); // edited in session 6
            Assert.True(ExtentMap.TryDecode(edited.Extents, edited.Size, out var extents));
            var loc = r.Blob(extents[0].BlobRowId);
            Assert.Equal(BlobCodec.ZstdDelta, loc.Codec);
            Assert.True(loc.StoredLength < 200, $"{loc.StoredLength} bytes for two edited lines");
            var added = r.StateAt(last, long.MaxValue).Single(v => v.Rel == "src/pkg9/new005.cs"); // new: no version to delta against
            Assert.True(ExtentMap.TryDecode(added.Extents, added.Size, out var whole));
            Assert.All(whole, e => Assert.False(r.Blob(e.BlobRowId).IsDelta));
        }

        // The pass after a session (and gc) leaves them: an old version that is a base stays whole, a cycle is never made.
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        AssertEveryMoment(trace, versions);
        using var after = TraceReader.Open(trace);
        var worst = TraceStatistics.Compute(after).WorstRebuild;
        Assert.NotNull(worst);
        Assert.True(worst!.Ratio <= RebuildCost.DefaultBound, $"worst rebuild {worst.Ratio}x");
    }

    [Fact]
    public void A_file_edited_in_every_session_keeps_its_chain_within_the_depth_bound()
    {
        var trace = _dir.Sub("t");
        var lines = SourceLines(3);
        var versions = new List<Dictionary<string, byte[]>>();
        for (var v = 0; v < TraceWriter.MaxIngestDeltaDepth * 2 + 3; v++)
        {
            lines[v % lines.Count] = $"changed_{v} = value({v});";
            versions.Add(new() { ["a.cs"] = Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n") });
        }

        using (var w = TraceWriter.Open(trace))
        {
            foreach (var tree in versions)
            {
                Record(w, tree);
            }
        }

        AssertEveryMoment(trace, versions);
        using var r = TraceReader.Open(trace);
        var depths = r.AllVersions().Where(v => v.Kind == EntryKind.File).Select(v =>
        {
            Assert.True(ExtentMap.TryDecode(v.Extents, v.Size, out var extents));
            return extents.Max(e => DeltaDepth(r, e.BlobRowId));
        }).ToList();
        Assert.Equal(TraceWriter.MaxIngestDeltaDepth, depths.Max());
        Assert.Contains(0L, depths.Skip(1)); // a whole version again after the deepest chain
    }

    [Fact]
    public void A_delta_named_again_is_reused_and_not_stored_whole_again()
    {
        var trace = _dir.Sub("t");
        var one = Encoding.UTF8.GetBytes(string.Join('\n', SourceLines(5)) + "\n");
        var two = Encoding.UTF8.GetBytes(string.Join('\n', SourceLines(5)) + "\n// one more line\n");
        List<Dictionary<string, byte[]>> versions =
        [
            new() { ["a.cs"] = one },
            new() { ["a.cs"] = two },
            new() { ["a.cs"] = two, ["copy.cs"] = two }, // the delta's content under another name
        ];
        long blobsAfterTwo;
        using (var w = TraceWriter.Open(trace))
        {
            Record(w, versions[0]);
            Record(w, versions[1]);
            blobsAfterTwo = BlobCount(trace);
            Record(w, versions[2]);
            Assert.Equal(1, w.DeltasStored);
        }

        Assert.Equal(blobsAfterTwo, BlobCount(trace));
        AssertEveryMoment(trace, versions);
    }

    [Fact]
    public void A_writer_that_does_not_group_stores_no_delta()
    {
        var trace = _dir.Sub("t");
        var versions = Versions(20, 3);
        using (var w = TraceWriter.Open(trace))
        {
            w.GroupsSmallBlobs = false; // keep mode, and a size limit, leave both off
            foreach (var tree in versions)
            {
                Record(w, tree);
            }

            Assert.Equal(0, w.DeltasStored);
        }

        using (var r = TraceReader.Open(trace))
        {
            Assert.DoesNotContain(r.AllBlobs(), b => b.IsDelta);
        }

        AssertEveryMoment(trace, versions);
    }

    [Fact]
    public void Record_skips_its_pass_when_every_superseded_chunk_is_a_base_of_the_delta_that_replaced_it()
    {
        var trace = _dir.Sub("t");
        var versions = Versions(40, 3);
        using var w = TraceWriter.Open(trace);
        foreach (var tree in versions)
        {
            Record(w, tree);
        }

        // Every edited file's new content is a delta against the content it replaced: compaction has nothing to
        // re-encode (a gc finds nothing either).
        Assert.False(w.HasMaintenanceWork());

        // A file replaced by other content (not worth a delta): its old chunk is superseded for real.
        var rewritten = new Dictionary<string, byte[]>(versions[^1]);
        var first = rewritten.Keys.Order(StringComparer.Ordinal).First();
        rewritten[first] = Encoding.UTF8.GetBytes(string.Join('\n', SourceLines(99)) + "\n");
        Record(w, rewritten);
        Assert.True(w.HasMaintenanceWork());
    }

    private static long BlobCount(string trace)
    {
        using var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true);
        using var count = db.Prepare("SELECT count(*) FROM blobs");
        return count.ScalarInt64() ?? 0;
    }
}
