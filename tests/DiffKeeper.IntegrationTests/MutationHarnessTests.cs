using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 13 item 2: `verify --read-data` as a complete gate, shown by mutation. Each mutation damages a copy of
/// recorded traces (SQL: a column set to an odd value or to another row's, a row deleted, in a table and column drawn
/// from the catalog's own schema; bytes: a flip, a cut or an extension of a pack or the catalog), then checks:
/// - every command ends within 60 s, with a documented exit code (never 1), stderr only bounded `diffkeeper: ` lines,
///   at most 256 MiB of resident memory (GNU time's maximum RSS), nothing written beside --out;
/// - when verify exits 0: export at every event of every session succeeds and lists what `ls` says the catalog
///   holds, `show` of every file gives the exported bytes, `restore` succeeds, and `gc` succeeds and leaves a trace
///   that verifies.
/// The recorded names include bytes that are not UTF-8, so both sides are compared as bytes (`*_b64` of `ls --json`;
/// the exported tree listed and read through getdents64, statx, readlinkat and open on the bytes).
/// A fixed seed; DIFFKEEPER_MUTATIONS sets how many (default 4 in the suite, ~15 s: a mutation verify passes costs an
/// export per event), DIFFKEEPER_MUTATIONS_SEED the seed, DIFFKEEPER_MUTATIONS_WORKERS how many run side by side (worker
/// w draws from seed + w); docs/benchmarks.md has the long runs.
/// </summary>
public sealed class MutationHarnessTests(MutationHarnessTests.Fixture fixture) : IClassFixture<MutationHarnessTests.Fixture>
{
    public sealed class Fixture : ScriptedTrace
    {
        public Fixture()
            : base(
                "echo one > a.txt; mkdir -p d/e; head -c 200000 /dev/urandom > d/big; ln -s a.txt l; echo two >> a.txt; chmod 600 a.txt; " +
                "printf x > \"$(printf 'n\\377')\"; ln -s \"$(printf 'n\\377')\" \"$(printf 'd/l\\376')\"",
                "dd if=/dev/urandom of=d/big bs=1000 count=5 seek=50 conv=notrunc 2>/dev/null; rm l; mv a.txt d/e/a2; truncate -s 1M sparse; " +
                "mv \"$(printf 'n\\377')\" \"$(printf 'd/e/m\\200')\"")
        {
            Cli.Ok(Cwd, "gc", "--trace", Trace); // deltas (compaction) and a maintenance pack

            // Names and a symlink target that are not UTF-8, so every comparison of paths runs on bytes.
            var ls = Cli.Ok(Cwd, "ls", "--json", "--trace", Trace).Stdout;
            Assert.True(ls.Contains("\"path_b64\"", StringComparison.Ordinal) && ls.Contains("\"target_b64\"", StringComparison.Ordinal), ls);
        }
    }

    private const long MaxRssKiB = 256 << 10;
    private static readonly HashSet<int> Documented = [0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];

    [Fact]
    public void Verify_is_a_complete_gate_under_mutation()
    {
        var count = Setting("DIFFKEEPER_MUTATIONS", 4);
        var seed = Setting("DIFFKEEPER_MUTATIONS_SEED", 20261206);
        var workers = Math.Max(1, Setting("DIFFKEEPER_MUTATIONS_WORKERS", 1));
        var violations = new List<string>();
        var passed = 0;
        var done = 0;
        var watch = Stopwatch.StartNew();
        var report = Environment.GetEnvironmentVariable("DIFFKEEPER_MUTATIONS_REPORT") is { Length: > 0 } r ? r : null;
        var gate = new Lock();

        // Worker w draws its mutations from seed + w, so a run is the same for a given seed and number of workers.
        Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, w =>
        {
            var rng = new Random(seed + w);
            for (var i = w; i < count; i += workers)
            {
                using var dir = new TempDir();
                var trace = dir.Sub("trace");
                StoreFiles.CopyDirectory(fixture.Trace, trace);
                var what = Mutate(trace, rng);
                var found = new List<string>();
                var verified = Check(dir, trace, found);
                Beside(dir, found);
                lock (gate)
                {
                    passed += verified ? 1 : 0;
                    done++;
                    violations.AddRange(found.Select(f => $"mutation {i} ({what}): {f}"));
                    if (report is not null)
                    {
                        File.AppendAllLines(report, [$"{i}\t{watch.Elapsed.TotalSeconds:0.0}\t{(found.Count == 0 ? verified ? "ok, verify passed" : "ok" : "VIOLATION")}\t{what}", .. found.Select(f => "\t" + f)]);
                    }
                }
            }
        });

        var summary = $"{done} mutations (seed {seed}, {workers} workers), {passed} passed verify, {violations.Count} violations, {watch.Elapsed.TotalSeconds:0.0} s";
        TestContext.Current.SendDiagnosticMessage(summary);
        if (report is not null)
        {
            File.AppendAllLines(report, [summary]);
        }

        Assert.True(violations.Count == 0, summary + "\n" + string.Join('\n', violations.Take(20)));
    }

    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), CultureInfo.InvariantCulture, out var n) ? n : fallback;

    /// <summary>
    /// Nothing written outside --out: the mutation's directory holds only what the harness made there (a path like
    /// `../escape` resolved from an --out would land here), and nothing appeared at the absolute paths the mutations write.
    /// </summary>
    private static void Beside(TempDir dir, List<string> found)
    {
        string[] ours = ["trace", "out-", "copy-", "state-"];
        var others = (LongPath.Names(dir.Path) ?? []).Where(n => !ours.Any(o => n == o || (o.EndsWith('-') && n.StartsWith(o, StringComparison.Ordinal)))).ToList();
        if (others.Count > 0)
        {
            found.Add($"something was written outside --out: {string.Join(", ", others.Select(PathBytes.Display))}");
        }

        foreach (var absolute in (string[])["/abs", "/escape"])
        {
            if (EntryStat.Lstat(absolute) is not null)
            {
                found.Add($"something was written at {absolute}");
            }
        }
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

        foreach (var (session, maxSeq) in Sessions(dir, trace, found))
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

        // Paths are bytes (a mutation may write any bytes into a path or a target): both sides are compared as
        // PathBytes strings (a byte that is not UTF-8 as U+DC80 + byte), from `*_b64` of the JSON when present and
        // from a listing by bytes (getdents64, statx, readlinkat) of the exported tree.
        var expected = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var line in ls.Lines)
        {
            var e = JsonDocument.Parse(line).RootElement;
            var path = JsonPath(e, "path")!;
            var kind = e.GetProperty("kind").GetString()!;
            var entry = kind switch
            {
                "file" => $"file {e.GetProperty("size").GetInt64()}",
                "symlink" => $"symlink {PathBytes.Display(JsonPath(e, "target") ?? "(none)")}",
                _ => kind,
            };
            if (!expected.TryAdd(path, entry))
            {
                found.Add($"verify passed, ls at {at} lists {PathBytes.Display(path)} twice");
            }

            if (kind == "file" && e.GetProperty("size").GetInt64() <= 64 << 20)
            {
                // show takes the path as it is, or its escaped form when it has bytes an argument cannot carry.
                var show = Run(dir, found, "show", "--trace", trace, "--session", session, "--time", at, AsArgument(path));
                var exported = ReadExported(outDir, path);
                if (show.ExitCode != 0 || exported is null || !show.StdoutBytes.AsSpan().SequenceEqual(exported))
                {
                    found.Add($"verify passed, show {PathBytes.Display(path)} at {at} (exit {show.ExitCode}) differs from the export ({(exported is null ? "not a readable file" : $"{exported.Length} bytes")})");
                }
            }
        }

        var actual = new Dictionary<string, string>(StringComparer.Ordinal);
        var everything = new DiffKeeper.Capture.PathFilter([outDir], "/nonexistent-trace-dir", []);
        foreach (var (rel, st) in TreeWalker.Walk(outDir, 0, everything))
        {
            actual[rel] = st.Kind switch
            {
                EntryKind.Symlink => $"symlink {PathBytes.Display(LongPath.ReadLink(TreeWalker.Join(outDir, rel)) ?? "(unreadable)")}",
                EntryKind.Directory => "directory",
                _ => $"file {st.Size}",
            };
        }

        // Export also makes the directories above recorded entries that the state does not list itself.
        foreach (var path in expected.Keys.ToList())
        {
            for (var cut = path.LastIndexOf('/'); cut > 0; cut = path.LastIndexOf('/', cut - 1))
            {
                expected.TryAdd(path[..cut], "directory");
            }
        }

        var differences = expected.Where(e => !actual.TryGetValue(e.Key, out var a) || a != e.Value)
            .Select(e => $"{PathBytes.Display(e.Key)}: catalog {e.Value}, export {(actual.TryGetValue(e.Key, out var a) ? a : "missing")}")
            .Concat(actual.Keys.Where(k => !expected.ContainsKey(k)).Select(k => $"{PathBytes.Display(k)}: not in the catalog, export {actual[k]}"))
            .ToList();
        if (differences.Count > 0)
        {
            found.Add($"verify passed, export at {at} differs from ls: {string.Join("; ", differences.Take(10))}");
        }
    }

    /// <summary>A path field of a JSON line as a PathBytes string: <c>NAME_b64</c>'s bytes when present, else <c>NAME</c>.</summary>
    private static string? JsonPath(JsonElement e, string name) =>
        e.TryGetProperty(name + "_b64", out var b64) && b64.ValueKind == JsonValueKind.String
            ? PathBytes.Decode(Convert.FromBase64String(b64.GetString()!))
            : e.TryGetProperty(name, out var text) && text.ValueKind == JsonValueKind.String ? text.GetString() : null;

    /// <summary>
    /// The command-line form of a path: itself, or its escaped form (which show and ls accept) when it holds a byte
    /// that is not UTF-8 or a control character; an argument is passed as UTF-8 and cannot hold a NUL.
    /// </summary>
    private static string AsArgument(string path) =>
        PathBytes.HasRawBytes(path) || path.Any(c => c < ' ' || c is '\x7f' || (c >= '\x80' && c <= '\x9f')) ? PathBytes.Display(path) : path;

    /// <summary>The bytes of the exported regular file <paramref name="rel"/>, opened by its bytes without following a symlink; null when it is not one.</summary>
    private static byte[]? ReadExported(string outDir, string rel)
    {
        var fd = LongPath.Open(TreeWalker.Join(outDir, rel), Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, 0);
        if (fd < 0)
        {
            return null;
        }

        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        using var stream = new FileStream(handle, FileAccess.Read);
        var bytes = new MemoryStream();
        stream.CopyTo(bytes);
        return bytes.ToArray();
    }

    /// <summary>Every session with its last event's seq (at most 40), from `timeline --json` (not from the catalog's tables, whose layout may change).</summary>
    private static List<(string Session, long MaxSeq)> Sessions(TempDir dir, string trace, List<string> found)
    {
        var timeline = Run(dir, found, "timeline", "--json", "--no-fold", "--trace", trace);
        if (timeline.ExitCode != 0)
        {
            found.Add($"verify passed, timeline exited {timeline.ExitCode}: {timeline.Stderr.Trim()}");
        }

        var last = new SortedDictionary<long, long>();
        foreach (var line in timeline.ExitCode == 0 ? timeline.Lines : [])
        {
            var e = JsonDocument.Parse(line).RootElement;
            var session = e.GetProperty("session").GetInt64();
            last[session] = Math.Max(last.GetValueOrDefault(session), e.GetProperty("seq").GetInt64());
        }

        return last.Select(s => (s.Key.ToString(CultureInfo.InvariantCulture), Math.Min(s.Value, 40))).ToList();
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

        // Tables, columns and row keys are read from the catalog itself (sqlite_master, table_info), so the harness
        // follows a change of the schema without knowing its tables: a row is named by its rowid, or by its primary key
        // in a WITHOUT ROWID table.
        using var db = SqliteDatabase.Open(catalog, readOnly: false);
        var tables = Strings(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
        var table = tables[rng.Next(tables.Count)];
        var columns = Strings(db, $"SELECT name FROM pragma_table_info('{table}') ORDER BY cid");
        List<string> keys;
        try
        {
            keys = Strings(db, $"SELECT 'rowid = ' || rowid FROM \"{table}\" ORDER BY rowid");
        }
        catch (CatalogException)
        {
            var pk = Strings(db, $"SELECT name FROM pragma_table_info('{table}') WHERE pk > 0 ORDER BY pk");
            keys = Strings(db, $"SELECT {string.Join(" || ' AND ' || ", pk.Select(c => $"'\"{c}\" IS ' || quote(\"{c}\")"))} FROM \"{table}\"");
        }

        if (keys.Count == 0)
        {
            return $"nothing ({table} is empty)";
        }

        var where = keys[rng.Next(keys.Count)];
        if (rng.Next(8) == 0)
        {
            db.Execute($"DELETE FROM \"{table}\" WHERE {where}");
            return $"delete {table} row {where}";
        }

        var column = columns[rng.Next(columns.Count)];
        string[] odd = ["NULL", "0", "1", "-1", "2", "3", "7", "12", "16", "255", "4096", "2147483648", "4611686018427387904", "-4611686018427387904",
            "'x'", "'5'", "x'00'", "x'deadbeef'", "x'61ff62'", "'new' || char(10) || 'line'", "'back\\x41slash'", "2.5", "''", "'../escape'", "'/abs'", "'a/../b'"];
        var value = rng.Next(3) == 0
            ? $"(SELECT \"{column}\" FROM \"{table}\" LIMIT 1 OFFSET {rng.Next(keys.Count)})"
            : rng.Next(4) == 0 ? (rng.Next(200) - 20).ToString(CultureInfo.InvariantCulture) : odd[rng.Next(odd.Length)];
        try
        {
            db.Execute($"UPDATE \"{table}\" SET \"{column}\" = {value} WHERE {where}");
        }
        catch (CatalogException e)
        {
            return $"set {table}.{column} of row {where} to {value}: refused by SQLite ({e.Message})";
        }

        return $"set {table}.{column} of row {where} to {value}";
    }

    private static List<string> Strings(SqliteDatabase db, string sql)
    {
        using var r = db.Prepare(sql);
        var list = new List<string>();
        while (r.Step())
        {
            list.Add(r.String(0));
        }

        return list;
    }
}

internal static class StringTruncation
{
    public static string Truncate(this string s, int max) => s.Length <= max ? s : s[..max];
}
