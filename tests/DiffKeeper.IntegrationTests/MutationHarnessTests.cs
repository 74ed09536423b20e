using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 13 item 2: `verify --read-data` as a complete gate, shown by mutation. Each mutation damages a copy of
/// recorded traces (SQL: a column set to an odd value or to another row's, a row deleted; bytes: a flip, a cut or
/// an extension of a pack or the catalog), then checks:
/// - every command ends within 60 s, with a documented exit code (never 1), stderr only bounded `diffkeeper: ` lines,
///   at most 256 MiB of resident memory (GNU time's maximum RSS), nothing written beside --out;
/// - when verify exits 0: export at every event of every session succeeds and lists what `ls` says the catalog
///   holds, `show` of every file gives the exported bytes, `restore` succeeds, and `gc` succeeds and leaves a trace
///   that verifies.
/// A fixed seed; DIFFKEEPER_MUTATIONS sets how many (default 4 in the suite, ~15 s: a mutation verify passes costs an export per event; docs/benchmarks.md has the long run).
/// </summary>
public sealed class MutationHarnessTests(MutationHarnessTests.Fixture fixture) : IClassFixture<MutationHarnessTests.Fixture>
{
    public sealed class Fixture : ScriptedTrace
    {
        public Fixture()
            : base(
                "echo one > a.txt; mkdir -p d/e; head -c 200000 /dev/urandom > d/big; ln -s a.txt l; echo two >> a.txt; chmod 600 a.txt",
                "dd if=/dev/urandom of=d/big bs=1000 count=5 seek=50 conv=notrunc 2>/dev/null; rm l; mv a.txt d/e/a2; truncate -s 1M sparse")
        {
            Cli.Ok(Cwd, "gc", "--trace", Trace); // deltas (compaction) and a maintenance pack
        }
    }

    private const long MaxRssKiB = 256 << 10;
    private static readonly HashSet<int> Documented = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    [Fact]
    public void Verify_is_a_complete_gate_under_mutation()
    {
        var count = int.TryParse(Environment.GetEnvironmentVariable("DIFFKEEPER_MUTATIONS"), CultureInfo.InvariantCulture, out var n) ? n : 4;
        var rng = new Random(20261206);
        var violations = new List<string>();
        var passed = 0;
        var watch = Stopwatch.StartNew();
        var report = Environment.GetEnvironmentVariable("DIFFKEEPER_MUTATIONS_REPORT") is { Length: > 0 } r ? r : null;
        for (var i = 0; i < count; i++)
        {
            using var dir = new TempDir();
            var trace = dir.Sub("trace");
            StoreFiles.CopyDirectory(fixture.Trace, trace);
            var what = Mutate(trace, rng);
            var found = new List<string>();
            if (Check(dir, trace, found))
            {
                passed++;
            }

            violations.AddRange(found.Select(f => $"mutation {i} ({what}): {f}"));
            if (report is not null)
            {
                File.AppendAllLines(report, [$"{i}\t{watch.Elapsed.TotalSeconds:0.0}\t{(found.Count == 0 ? "ok" : "VIOLATION")}\t{what}", .. found.Select(f => "\t" + f)]);
            }
        }

        var summary = $"{count} mutations, {passed} passed verify, {violations.Count} violations, {watch.Elapsed.TotalSeconds:0.0} s";
        TestContext.Current.SendDiagnosticMessage(summary);
        if (report is not null)
        {
            File.AppendAllLines(report, [summary]);
        }

        Assert.True(violations.Count == 0, summary + "\n" + string.Join('\n', violations.Take(20)));
    }

    /// <summary>Runs the commands on the mutated trace; true when verify passed. Violations go to <paramref name="found"/>.</summary>
    private static bool Check(TempDir dir, string trace, List<string> found)
    {
        var verify = Run(dir, found, "verify", "--read-data", "--trace", trace);
        if (verify.ExitCode != 0)
        {
            // Even a trace verify refuses gets bounded, one-line failures from the readers and from gc.
            Run(dir, found, "export", "--trace", trace, "--out", Out(dir));
            Run(dir, found, "show", "--trace", trace, "d/big");
            Run(dir, found, "gc", "--trace", CopyOf(dir, trace));
            return false;
        }

        foreach (var (session, maxSeq) in Sessions(trace))
        {
            for (var seq = 0L; seq <= maxSeq; seq++)
            {
                var at = seq == 0 ? "start" : $"#{seq}";
                var outDir = Out(dir);
                var export = Run(dir, found, "export", "--trace", trace, "--session", session, "--time", at, "--out", outDir);
                if (export.ExitCode != 0)
                {
                    found.Add($"verify passed, export --session {session} --time {at} exited {export.ExitCode}: {export.Stderr.Trim()}");
                    continue;
                }

                if (seq == maxSeq || seq == maxSeq / 2)
                {
                    CompareWithCatalog(dir, trace, session, at, outDir, found);
                }
            }
        }

        var restore = Run(dir, found, "restore", "--store", trace, "--state-dir", dir.Sub("state-" + Guid.NewGuid().ToString("N")[..6]));
        if (restore.ExitCode != 0)
        {
            found.Add($"verify passed, restore exited {restore.ExitCode}: {restore.Stderr.Trim()}");
        }

        var copy = CopyOf(dir, trace);
        var gc = Run(dir, found, "gc", "--trace", copy);
        if (gc.ExitCode != 0)
        {
            found.Add($"verify passed, gc exited {gc.ExitCode}: {gc.Stderr.Trim()}");
        }
        else if (Run(dir, found, "verify", "--read-data", "--trace", copy) is { ExitCode: not 0 } after)
        {
            found.Add($"verify passed, gc succeeded, then verify failed: {after.Stdout.Trim()}");
        }

        return true;
    }

    /// <summary>The exported tree against `ls --json` (what the catalog holds), and every file against `show`.</summary>
    private static void CompareWithCatalog(TempDir dir, string trace, string session, string at, string outDir, List<string> found)
    {
        var ls = Run(dir, found, "ls", "--json", "--trace", trace, "--session", session, "--time", at);
        if (ls.ExitCode != 0)
        {
            found.Add($"verify passed, ls --time {at} exited {ls.ExitCode}");
            return;
        }

        var expected = new List<string>();
        foreach (var line in ls.Lines)
        {
            var e = JsonDocument.Parse(line).RootElement;
            var path = e.GetProperty("path").GetString()!;
            var kind = e.GetProperty("kind").GetString()!;
            expected.Add(kind switch
            {
                "file" => $"{path} file {e.GetProperty("size").GetInt64()}",
                "symlink" => $"{path} symlink {e.GetProperty("target").GetString()}",
                _ => $"{path} {kind}",
            });
            if (kind == "file")
            {
                var show = Run(dir, found, "show", "--trace", trace, "--session", session, "--time", at, path);
                var exported = File.ReadAllBytes(Path.Combine(outDir, path));
                if (show.ExitCode != 0 || !show.StdoutBytes.AsSpan().SequenceEqual(exported))
                {
                    found.Add($"verify passed, show {path} at {at} (exit {show.ExitCode}) differs from the export");
                }
            }
        }

        var actual = new List<string>();
        foreach (var entry in Directory.EnumerateFileSystemEntries(outDir, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var rel = Path.GetRelativePath(outDir, entry);
            var info = new FileInfo(entry);
            actual.Add(info.LinkTarget is { } target ? $"{rel} symlink {target}"
                : Directory.Exists(entry) ? $"{rel} directory"
                : $"{rel} file {info.Length}");
        }

        // Export also makes the directories above recorded entries that the state does not list itself.
        var listed = expected.Select(e => e[..e.IndexOf(' ', StringComparison.Ordinal)]).ToHashSet(StringComparer.Ordinal);
        foreach (var path in listed.ToList())
        {
            for (var parent = Path.GetDirectoryName(path); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
            {
                if (listed.Add(parent))
                {
                    expected.Add($"{parent} directory");
                }
            }
        }

        expected.Sort(StringComparer.Ordinal);
        actual.Sort(StringComparer.Ordinal);
        if (!expected.SequenceEqual(actual))
        {
            found.Add($"verify passed, export at {at} differs from ls: expected [{string.Join(", ", expected)}], got [{string.Join(", ", actual)}]");
        }
    }

    private static List<(string Session, long MaxSeq)> Sessions(string trace)
    {
        using var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true);
        using var r = db.Prepare("SELECT s.id, (SELECT coalesce(max(seq), 0) FROM events e WHERE e.session_id = s.id) FROM sessions s ORDER BY s.id");
        var list = new List<(string, long)>();
        while (r.Step())
        {
            list.Add((r.Int64(0).ToString(CultureInfo.InvariantCulture), Math.Min(r.Int64(1), 40)));
        }

        return list;
    }

    private static string Out(TempDir dir)
    {
        var parent = dir.Sub("out-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(parent);
        return Path.Combine(parent, "out");
    }

    private static string CopyOf(TempDir dir, string trace)
    {
        var copy = dir.Sub("copy-" + Guid.NewGuid().ToString("N")[..6]);
        StoreFiles.CopyDirectory(trace, copy);
        return copy;
    }

    /// <summary>Runs diffkeeper under GNU time and checks what holds for every command whatever the trace.</summary>
    private static Cli.Result Run(TempDir dir, List<string> found, params string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/time")
        {
            WorkingDirectory = dir.Path,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
        };
        foreach (var a in (string[])["-q", "-f", "dk-maxrss %M", Cli.Executable, .. args])
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderrTask = p.StandardError.ReadToEndAsync();
        var name = string.Join(' ', args.Take(1));
        if (!p.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            p.Kill(true);
            p.WaitForExit();
            found.Add($"{name} did not finish within 60 s");
        }

        copy.GetAwaiter().GetResult();
        var lines = stderrTask.GetAwaiter().GetResult().Split('\n', StringSplitOptions.RemoveEmptyEntries).ToList();
        if (lines.Count > 0 && lines[^1].StartsWith("dk-maxrss ", StringComparison.Ordinal))
        {
            if (long.Parse(lines[^1]["dk-maxrss ".Length..], CultureInfo.InvariantCulture) > MaxRssKiB)
            {
                found.Add($"{name} used {lines[^1]} KiB, more than 256 MiB");
            }

            lines.RemoveAt(lines.Count - 1);
        }

        var code = p.ExitCode;
        if (!Documented.Contains(code))
        {
            found.Add($"{name} exited {code}: {string.Join(" / ", lines.Take(3))}");
        }

        if (lines.Any(l => !l.StartsWith("diffkeeper: ", StringComparison.Ordinal) || l.Length > 1100))
        {
            found.Add($"{name} printed more than bounded 'diffkeeper: ' lines: {string.Join(" / ", lines.Take(3)).Truncate(300)}");
        }

        if (name == "export" && args.SkipWhile(a => a != "--out").Skip(1).FirstOrDefault() is { } outDir)
        {
            var beside = Directory.EnumerateFileSystemEntries(Path.GetDirectoryName(outDir)!).Select(Path.GetFileName).Where(f => f != "out").ToList();
            if (beside.Count > 0)
            {
                found.Add($"export left {string.Join(", ", beside)} beside --out");
            }
        }

        var bytes = stdout.ToArray();
        return new Cli.Result(code, Encoding.UTF8.GetString(bytes), string.Join('\n', lines), bytes);
    }

    /// <summary>Applies one random mutation; returns what it did.</summary>
    private static string Mutate(string trace, Random rng)
    {
        var catalog = Path.Combine(trace, "catalog.db");
        var packs = Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        var kind = rng.Next(10);
        if (kind >= 8)
        {
            var file = kind == 9 || packs.Count == 0 ? catalog : packs[rng.Next(packs.Count)];
            var bytes = File.ReadAllBytes(file);
            var at = rng.Next(bytes.Length);
            switch (rng.Next(3))
            {
                case 0:
                    bytes[at] ^= (byte)(1 << rng.Next(8));
                    File.WriteAllBytes(file, bytes);
                    return $"flip bit of {Path.GetFileName(file)} at {at}";
                case 1:
                    File.WriteAllBytes(file, bytes[..at]);
                    return $"truncate {Path.GetFileName(file)} to {at}";
                default:
                    var extra = new byte[rng.Next(1, 300)];
                    rng.NextBytes(extra);
                    File.WriteAllBytes(file, [.. bytes, .. extra]);
                    return $"extend {Path.GetFileName(file)} by {extra.Length}";
            }
        }

        using var db = SqliteDatabase.Open(catalog, readOnly: false);
        string[] tables = ["sessions", "roots", "paths", "events", "versions", "blobs", "packs", "meta"];
        var table = tables[rng.Next(tables.Length)];
        var columns = new List<string>();
        using (var info = db.Prepare($"SELECT name FROM pragma_table_info('{table}')"))
        {
            while (info.Step())
            {
                columns.Add(info.String(0));
            }
        }

        var rows = new List<long>();
        using (var r = db.Prepare(table == "events" ? "SELECT seq FROM events" : table == "meta" ? "SELECT rowid FROM meta" : $"SELECT rowid FROM {table}"))
        {
            while (r.Step())
            {
                rows.Add(r.Int64(0));
            }
        }

        if (rows.Count == 0)
        {
            return $"nothing ({table} is empty)";
        }

        var row = rows[rng.Next(rows.Count)];
        var where = table == "events" ? $"seq = {row} AND session_id = (SELECT session_id FROM events WHERE seq = {row} LIMIT 1)" : $"rowid = {row}";
        if (rng.Next(8) == 0)
        {
            db.Execute($"DELETE FROM {table} WHERE {where}");
            return $"delete {table} row {row}";
        }

        var column = columns[rng.Next(columns.Count)];
        string[] odd = ["NULL", "0", "1", "-1", "2", "3", "7", "12", "16", "255", "4096", "2147483648", "4611686018427387904", "-4611686018427387904",
            "'x'", "'5'", "x'00'", "x'deadbeef'", "2.5", "''", "'../escape'", "'/abs'", "'a/../b'"];
        var value = rng.Next(3) == 0
            ? $"(SELECT {column} FROM {table} LIMIT 1 OFFSET {rng.Next(rows.Count)})"
            : rng.Next(4) == 0 ? (rng.Next(200) - 20).ToString(CultureInfo.InvariantCulture) : odd[rng.Next(odd.Length)];
        try
        {
            db.Execute($"UPDATE {table} SET {column} = {value} WHERE {where}");
        }
        catch (CatalogException e)
        {
            return $"set {table}.{column} of row {row} to {value}: refused by SQLite ({e.Message})";
        }

        return $"set {table}.{column} of row {row} to {value}";
    }
}

internal static class StringTruncation
{
    public static string Truncate(this string s, int max) => s.Length <= max ? s : s[..max];
}
