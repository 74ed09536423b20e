using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Store format 5 (issue 12, a smaller catalog): sessions of one directory share its path rows, and each baseline
/// stores only what differs from the end of the session before it. Recorded for real: every moment still exports
/// exactly the tree that was, a session over an unchanged tree stores no version at all, and a session's path
/// history still starts with its baseline.
/// </summary>
public sealed class BaselineInheritanceTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private SortedDictionary<string, Entry> Export(int session, string moment, string label = "")
    {
        var output = _dir.Sub($"export-{session}-{moment}{label}");
        Cli.Ok(Work, "export", "--trace", Trace, "--session", session.ToString(System.Globalization.CultureInfo.InvariantCulture), "--time", moment, "--out", output);
        return TreeSnapshot.Take(output);
    }

    private long Scalar(string sql)
    {
        using var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true);
        using var q = db.Prepare(sql);
        return q.ScalarInt64() ?? -1;
    }

    [Fact]
    public void Every_moment_of_sessions_that_inherit_their_baseline_exports_exactly_and_an_unchanged_tree_stores_no_version()
    {
        Directory.CreateDirectory(Path.Combine(Work, "sub", "deep"));
        for (var i = 0; i < 40; i++)
        {
            File.WriteAllText(Path.Combine(Work, "sub", $"f{i}.txt"), $"file {i}\n");
        }

        File.WriteAllText(Path.Combine(Work, "sub", "deep", "gone.txt"), "to be deleted between sessions\n");
        File.CreateSymbolicLink(Path.Combine(Work, "link"), "sub/f1.txt");
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo one > out.txt");
        var end1 = TreeSnapshot.Take(Work);

        // Between sessions: a file changed, one deleted, one added, a mode changed, a link retargeted.
        File.AppendAllText(Path.Combine(Work, "sub", "f2.txt"), "more\n");
        File.Delete(Path.Combine(Work, "sub", "deep", "gone.txt"));
        File.WriteAllText(Path.Combine(Work, "sub", "new.txt"), "new\n");
        File.SetUnixFileMode(Path.Combine(Work, "sub", "f3.txt"), (UnixFileMode)0x180); // 0600
        File.Delete(Path.Combine(Work, "link"));
        File.CreateSymbolicLink(Path.Combine(Work, "link"), "sub/f4.txt");
        var start2 = TreeSnapshot.Take(Work);
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "rm sub/f5.txt; echo two > out.txt; echo x >> sub/f6.txt");
        var end2 = TreeSnapshot.Take(Work);
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "true");

        TreeSnapshot.AssertSame(end1, Export(1, "end"), "session 1 at its end");
        TreeSnapshot.AssertSame(start2, Export(2, "start"), "session 2 at its start");
        TreeSnapshot.AssertSame(end2, Export(2, "end"), "session 2 at its end");
        TreeSnapshot.AssertSame(end2, Export(3, "start"), "session 3 at its start");
        TreeSnapshot.AssertSame(end2, Export(3, "end"), "session 3 at its end");

        // What is stored: session 1 every path; session 2's baseline only what changed between the sessions (the two
        // directories whose entries changed count as changed); session 3 nothing; one path row per path.
        Assert.Equal(2, Scalar("SELECT baseline_from FROM sessions WHERE id = 3"));
        Assert.Equal(0, Scalar("SELECT count(*) FROM versions WHERE session_id = 3"));
        Assert.InRange(Scalar("SELECT count(*) FROM versions WHERE session_id = 2 AND seq = 0"), 5, 9);
        Assert.Equal(Scalar("SELECT count(DISTINCT rel) FROM paths"), Scalar("SELECT count(*) FROM paths"));

        // A path's history in a session that only inherits it still starts with its baseline, and show reads it.
        var log = Cli.Ok(Work, "log", "--trace", Trace, "--session", "3", "sub/f2.txt").Stdout;
        Assert.Contains("baseline", log, StringComparison.Ordinal);
        Assert.Equal("file 2\nmore\n", Cli.Ok(Work, "show", "--trace", Trace, "--session", "3", "--time", "start", "sub/f2.txt").Stdout);
        // A path deleted before a session began is not that session's.
        var gone = Cli.Run(Work, "show", "--trace", Trace, "--session", "2", "sub/deep/gone.txt");
        Assert.Equal(8, gone.ExitCode);
        Assert.Contains("was never seen in session 2", gone.Stderr, StringComparison.Ordinal);
        Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");
    }

    /// <summary>
    /// Deltas written while recording (docs/store-format.md): sessions over the versions of a source tree brought one
    /// after the other into the watched directory, as bench/anchors.py records W3. Each later baseline stores its
    /// edited files as small deltas against the versions it inherits; every session still exports exactly its
    /// version, the trace verifies with its data, and `stats` reports a worst rebuild within the default bound, before
    /// and after a `gc`.
    /// </summary>
    [Fact]
    public void A_later_sessions_edited_files_are_deltas_against_the_versions_it_inherits_and_every_session_exports_exactly()
    {
        var rng = new Random(12);
        string[] words = ["alpha", "beta", "value", "index", "buffer", "result", "handle", "offset", "length", "node", "tree", "state"];
        string Line() => $"    {words[rng.Next(words.Length)]}_{words[rng.Next(words.Length)]} = {words[rng.Next(words.Length)]}({rng.Next(1000)});";
        var files = Enumerable.Range(0, 60).ToDictionary(i => $"src/pkg{i % 3}/f{i:D2}.cs",
            i => Enumerable.Range(0, rng.Next(30, 600)).Select(_ => Line()).ToList());
        var snapshots = new List<SortedDictionary<string, Entry>>();
        for (var v = 0; v < 5; v++)
        {
            if (v > 0)
            {
                foreach (var name in files.Keys.Where((_, i) => i % 6 == v).ToList())
                {
                    files[name][rng.Next(files[name].Count)] = Line(); // a tenth of the files: a line replaced, one added
                    files[name].Insert(rng.Next(files[name].Count), Line());
                }

                var gone = files.Keys.Order(StringComparer.Ordinal).ElementAt(rng.Next(files.Count));
                files.Remove(gone);
                File.Delete(Path.Combine(Work, gone));
                files[$"src/new/n{v}.cs"] = Enumerable.Range(0, 200).Select(_ => Line()).ToList();
            }

            foreach (var (rel, lines) in files)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(Work, rel))!);
                var text = string.Join('\n', lines) + "\n";
                var path = Path.Combine(Work, rel);
                if (!File.Exists(path) || File.ReadAllText(path) != text)
                {
                    File.WriteAllText(path, text);
                }
            }

            Cli.Ok(Work, "record", "-q", "--capture", "scan", "--trace", Trace, "--", "true");
            snapshots.Add(TreeSnapshot.Take(Work));
        }

        void AssertEverySession(string when)
        {
            for (var s = 1; s <= snapshots.Count; s++)
            {
                TreeSnapshot.AssertSame(snapshots[s - 1], Export(s, "end", when), $"session {s} at its end{when}");
            }

            Cli.Ok(Work, "verify", "--trace", Trace, "--read-data");
            using var stats = System.Text.Json.JsonDocument.Parse(Cli.Ok(Work, "stats", "--trace", Trace, "--json").Stdout);
            var worst = stats.RootElement.GetProperty("worst_rebuild");
            Assert.True(worst.GetProperty("ratio").GetDouble() <= 32, worst.ToString());
        }

        // The files edited in sessions 2-5 (10 a session) are deltas at the end of session 5, their newest content
        // (compaction's deltas are only ever superseded content: on main's binary this count is 0).
        using (var r = Storage.TraceReader.Open(Trace))
        {
            var heads = r.StateAt(r.Sessions()[^1], long.MaxValue).Count(v => v.Extents is { } map &&
                Storage.ExtentMap.TryDecode(map, v.Size, out var extents) && extents.Any(e => r.Blob(e.BlobRowId).IsDelta));
            Assert.InRange(heads, 4 * 10 * 3 / 4, 4 * 10);
        }

        AssertEverySession("");
        Cli.Ok(Work, "gc", "--trace", Trace);
        AssertEverySession(" after gc");
    }
}
