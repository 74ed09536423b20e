using System.Text.Json;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`ls` lists what `export` writes, for the same moment; `export --include` writes a subset of it.</summary>
public sealed class LsAndIncludeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public LsAndIncludeTests()
    {
        Directory.CreateDirectory(Path.Combine(Work, "conf", "deep"));
        File.WriteAllText(Path.Combine(Work, "conf", "app.ini"), "a=1\n");
        File.WriteAllText(Path.Combine(Work, "conf", "deep", "x.log"), "old\n");
        File.WriteAllText(Path.Combine(Work, "top.txt"), "top\n");
        Directory.CreateDirectory(Path.Combine(Work, "empty"));
        File.SetUnixFileMode(Path.Combine(Work, "empty"), (UnixFileMode)0x1C0); // 0700
        var script = "mkdir -p logs/2026; echo one > logs/2026/a.log; printf 'no newline' > logs/b.txt; chmod 640 top.txt; " +
                     "ln -s ../top.txt logs/link; echo new >> conf/deep/x.log; rm conf/app.ini; truncate -s 100000 sparse.bin";
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", script);
    }

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    [Theory]
    [InlineData("start")]
    [InlineData("end")]
    public void Ls_equals_a_walk_of_an_export_of_the_same_moment(string moment)
    {
        var output = _dir.Sub("export-" + moment);
        Cli.Ok(Work, "export", "--trace", Trace, "--time", moment, "--out", output);
        var walked = new List<string>();
        var filter = new DiffKeeper.Capture.PathFilter([output], "/nonexistent-trace-dir", []);
        foreach (var (rel, st) in TreeWalker.Walk(output, 0, filter).OrderBy(e => e.Rel, StringComparer.Ordinal))
        {
            var kind = st.Kind switch { EntryKind.File => "file", EntryKind.Directory => "directory", _ => "symlink" };
            var mode = st.Kind == EntryKind.Symlink ? "-" : Convert.ToString(st.Mode, 8).PadLeft(4, '0');
            var size = st.Kind == EntryKind.File ? st.Size.ToString(System.Globalization.CultureInfo.InvariantCulture) : "null";
            var target = st.Kind == EntryKind.Symlink ? new FileInfo(Path.Combine(output, rel)).LinkTarget : null;
            walked.Add($"{rel} {kind} {mode} {size} {st.MtimeNs} {target}");
        }

        var ls = Cli.JsonLines(Cli.Ok(Work, "ls", "--trace", Trace, "--time", moment, "--json")).Select(j =>
        {
            var kind = j.GetProperty("kind").GetString();
            var mode = kind == "symlink" ? "-" : j.GetProperty("mode").GetString();
            var size = j.GetProperty("size").ValueKind == JsonValueKind.Null ? "null" : j.GetProperty("size").GetInt64().ToString(System.Globalization.CultureInfo.InvariantCulture);
            return $"{j.GetProperty("path").GetString()} {kind} {mode} {size} {j.GetProperty("mtime_ns").GetInt64()} {j.GetProperty("target").GetString()}";
        }).ToList();

        Assert.Equal(walked, ls);
        Assert.NotEmpty(ls);
        var text = Cli.Ok(Work, "ls", "--trace", Trace, "--time", moment).Lines;
        Assert.Equal(ls.Select(l => l.Split(' ')[0]), text.Select(l => l.Split("  ")[^1].Split(" -> ")[0]));
    }

    [Fact]
    public void Ls_of_a_path_lists_it_and_what_is_below_it_and_the_text_form_reads_like_ls_l()
    {
        var lines = Cli.Ok(Work, "ls", "--trace", Trace, "logs").Lines;
        Assert.Equal(["logs", "logs/2026", "logs/2026/a.log", "logs/b.txt", "logs/link"], lines.Select(l => l.Split("  ")[^1].Split(" -> ")[0]));
        Assert.StartsWith("drwxr-xr-x", lines[0]);
        Assert.Matches(@"^-rw-r--r-- +10  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z  logs/b\.txt$", lines[3]);
        Assert.EndsWith("logs/link -> ../top.txt", lines[4]);
        Assert.StartsWith("-rw-r-----", Cli.Ok(Work, "ls", "--trace", Trace, Path.Combine(Work, "top.txt")).Lines.Single());
        Assert.Equal(8, Cli.Run(Work, "ls", "--trace", Trace, "--time", "start", "logs").ExitCode);
    }

    [Fact]
    public void Export_include_writes_the_matching_entries_and_the_directories_above_them_as_recorded()
    {
        var full = _dir.Sub("full");
        var part = _dir.Sub("part");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", full);
        Cli.Ok(Work, "export", "--trace", Trace, "--out", part, "--include", "*.log", "--include", "top.txt");

        var globs = new[] { new Glob("*.log"), new Glob("top.txt") };
        var expected = new SortedDictionary<string, Entry>(StringComparer.Ordinal);
        var all = TreeSnapshot.Take(full);
        foreach (var (path, entry) in all.Where(e => globs.Any(g => g.IsMatch(e.Key))))
        {
            expected[path] = entry;
            for (var p = TracePath.Parent(path); p.Length > 0; p = TracePath.Parent(p))
            {
                expected[p] = all[p];
            }
        }

        Assert.Equal(["conf", "conf/deep", "conf/deep/x.log", "logs", "logs/2026", "logs/2026/a.log", "top.txt"], expected.Keys);
        TreeSnapshot.AssertSame(expected, TreeSnapshot.Take(part), "export --include");
        Assert.Equal(Directory.GetLastWriteTimeUtc(Path.Combine(full, "logs")), Directory.GetLastWriteTimeUtc(Path.Combine(part, "logs")));
    }
}
