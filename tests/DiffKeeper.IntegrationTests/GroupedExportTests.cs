using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Packs;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// An export of a tree of many small files, as a source tree is recorded (W3): the files sit in several zstd groups,
/// and later sessions' edits are deltas against slices of them, chained. The export writes them group by group on
/// every core (docs/architecture.md, "Export"); every session still exports byte for byte, with modes and mtimes,
/// and a damaged group is reported as a sequential reader meets it: the first file in path order it breaks.
/// </summary>
public sealed class GroupedExportTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static readonly int[] Modes = [0x1A4, 0x1ED, 0x180, 0x124]; // 0644, 0755, 0600, 0444

    /// <summary>Three sessions over ~700 files in 8 directories (~4.5 MB: several groups), edits, mode and mtime changes between them.</summary>
    private List<SortedDictionary<string, Entry>> RecordSessions()
    {
        var rng = new Random(3);
        string[] words = ["alpha", "beta", "value", "index", "buffer", "result", "handle", "offset", "length", "node"];
        string Line() => $"    {words[rng.Next(words.Length)]}_{words[rng.Next(words.Length)]} = {words[rng.Next(words.Length)]}({rng.Next(100000)});";
        var files = Enumerable.Range(0, 700).ToDictionary(i => $"src/pkg{i % 8}/f{i:D3}.txt",
            i => i % 97 == 0 ? [] : Enumerable.Range(0, rng.Next(20, 300)).Select(_ => Line()).ToList());
        var modes = files.Keys.ToDictionary(k => k, _ => Modes[rng.Next(Modes.Length)]);
        var mtimes = files.Keys.ToDictionary(k => k, _ => 1_600_000_000_000_000_000L + rng.NextInt64(1_000_000_000_000_000L));
        var snapshots = new List<SortedDictionary<string, Entry>>();
        for (var v = 0; v < 3; v++)
        {
            if (v > 0)
            {
                foreach (var name in files.Keys.Where((_, i) => i % 7 == v || i % 11 == 0).ToList())
                {
                    if (files[name].Count > 0)
                    {
                        files[name][rng.Next(files[name].Count)] = Line(); // the same files again in each session: chains
                    }

                    files[name].Insert(rng.Next(files[name].Count + 1), Line());
                    mtimes[name] += 1_000_000_007;
                }

                foreach (var name in files.Keys.Where((_, i) => i % 13 == v).ToList())
                {
                    modes[name] = Modes[(Array.IndexOf(Modes, modes[name]) + 1) % Modes.Length]; // mode only
                }

                var gone = files.Keys.Order(StringComparer.Ordinal).ElementAt(rng.Next(files.Count));
                files.Remove(gone);
                File.Delete(Path.Combine(Work, gone));
                for (var n = 0; n < 20; n++)
                {
                    var name = $"src/pkg{n % 8}/new{v}-{n:D2}.txt";
                    files[name] = Enumerable.Range(0, rng.Next(5, 100)).Select(_ => Line()).ToList();
                    modes[name] = Modes[n % Modes.Length];
                    mtimes[name] = 1_700_000_000_123_456_789L + n;
                }
            }

            foreach (var (rel, lines) in files)
            {
                var path = Path.Combine(Work, rel);
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                var text = lines.Count == 0 ? "" : string.Join('\n', lines) + "\n";
                if (!File.Exists(path) || File.ReadAllText(path) != text)
                {
                    if (File.Exists(path))
                    {
                        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                    }

                    File.WriteAllText(path, text);
                }

                File.SetUnixFileMode(path, (UnixFileMode)modes[rel]);
                File.SetLastWriteTimeUtc(path, DateTime.UnixEpoch.AddTicks(mtimes[rel] / 100));
            }

            Cli.Ok(Work, "record", "-q", "--capture", "scan", "--trace", Trace, "--", "true");
            snapshots.Add(TreeSnapshot.Take(Work));
        }

        return snapshots;
    }

    private SortedDictionary<string, Entry> Export(int session, string label)
    {
        var output = _dir.Sub($"export-{session}{label}");
        Cli.Ok(Work, "export", "--trace", Trace, "--session", session.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", output);
        return TreeSnapshot.Take(output);
    }

    [Fact]
    public void Every_session_of_many_small_grouped_files_and_chained_deltas_exports_byte_for_byte_with_modes_and_mtimes()
    {
        var snapshots = RecordSessions();

        // What the test is for: several groups, and files of the last session that are deltas, some through a chain.
        using (var r = TraceReader.Open(Trace))
        {
            var last = r.Sessions()[^1];
            var blobs = r.StateAt(last, long.MaxValue).Where(v => v.Kind == EntryKind.File && v.Size > 0)
                .Select(v => ExtentMap.TryDecode(v.Extents, v.Size, out var e) ? r.Blob(e[0].BlobRowId) : default).ToList();
            Assert.True(blobs.Where(b => b.IsSlice).Select(b => b.Bases[0]).Distinct().Count() >= 3, "fewer than 3 groups");
            var deltas = blobs.Where(b => b.IsDelta).ToList();
            Assert.True(deltas.Count >= 50, $"{deltas.Count} deltas");
            Assert.Contains(deltas, d => r.Blob(d.Bases[0]).IsDelta);
        }

        for (var s = 1; s <= snapshots.Count; s++)
        {
            TreeSnapshot.AssertSame(snapshots[s - 1], Export(s, ""), $"session {s}");
        }
    }

    [Fact]
    public void A_damaged_group_fails_the_export_naming_the_first_file_in_path_order_it_breaks_every_time()
    {
        RecordSessions();

        // The oracle: a sequential read of every file of the last session, in path order, after the damage.
        BlobLocation group;
        using (var r = TraceReader.Open(Trace))
        {
            var groups = r.AllBlobs().Where(b => b.Codec == BlobCodec.Group).OrderBy(b => b.BlobRowId).ToList();
            group = groups[groups.Count / 2];
        }

        var pack = Path.Combine(Trace, PackFormat.RelativePath(group.PackId));
        File.SetUnixFileMode(pack, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using (var f = File.OpenHandle(pack, FileMode.Open, FileAccess.ReadWrite))
        {
            var at = group.Offset + PackFormat.RecordHeaderSize + (group.StoredLength / 2);
            var b = new byte[1];
            RandomAccess.Read(f, b, at);
            b[0] ^= 0x5A;
            RandomAccess.Write(f, b, at);
        }

        string expected;
        using (var r = TraceReader.Open(Trace))
        {
            expected = r.StateAt(r.Sessions()[^1], long.MaxValue).Where(v => v.Kind == EntryKind.File)
                .OrderBy(v => v.Rel, StringComparer.Ordinal)
                .First(v =>
                {
                    Assert.True(ExtentMap.TryDecode(v.Extents, v.Size, out var extents));
                    try
                    {
                        foreach (var e in extents)
                        {
                            r.Blobs.Read(r.Blob(e.BlobRowId), new byte[e.Length]);
                        }

                        return false;
                    }
                    catch (BlobDamagedException)
                    {
                        return true;
                    }
                }).Rel;
        }

        for (var i = 0; i < 3; i++)
        {
            var result = Cli.Run(Work, "export", "--trace", Trace, "--out", _dir.Sub($"damaged{i}"));
            Assert.Equal(5, result.ExitCode);
            var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.StartsWith($"diffkeeper: {expected} (session 3, ", line, StringComparison.Ordinal);
            Assert.Contains("is damaged in the trace", line, StringComparison.Ordinal);
            Assert.False(Directory.Exists(_dir.Sub($"damaged{i}")));
        }
    }
}
