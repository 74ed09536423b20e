using System.Diagnostics;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 13: each symptom found by crafting traces as an attacker would, as a regression test against the published
/// binary. A trace is recorded once (fixture); each test damages a copy with SQL on the real catalog or by replacing
/// a file, then checks that `verify --read-data` fails whenever a reader would fail or go wrong, and that every
/// command ends with one `diffkeeper: ` line and the documented exit code.
/// </summary>
public sealed class HostileTraceTests(HostileTraceTests.Fixture fixture) : IClassFixture<HostileTraceTests.Fixture>, IDisposable
{
    public sealed class Fixture() : ScriptedTrace("echo hello > a.txt; mkdir d; echo x > d/b; ln -s a.txt l; head -c 300000 /dev/urandom > big");

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>A copy of the recorded trace with <paramref name="sql"/> applied to its catalog.</summary>
    private string Damaged(string sql)
    {
        var copy = _dir.Sub("t-" + Guid.NewGuid().ToString("N")[..8]);
        StoreFiles.CopyDirectory(fixture.Trace, copy);
        if (sql.Length > 0)
        {
            using var db = SqliteDatabase.Open(Path.Combine(copy, "catalog.db"), readOnly: false);
            db.Execute(sql);
        }

        return copy;
    }

    private string Fresh => _dir.Sub("o-" + Guid.NewGuid().ToString("N")[..8]);

    private static List<string> Packs(string trace) =>
        Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories).ToList();

    /// <summary>
    /// Runs a command and checks its exit code and that its error is one bounded line of ours, last (gc reports its
    /// steps on stderr before), with no stack trace anywhere.
    /// </summary>
    private Cli.Result Fails(int code, params string[] args)
    {
        var r = Cli.Run(_dir.Path, args);
        Assert.True(r.ExitCode == code, $"expected exit {code}: diffkeeper {string.Join(' ', args)}: {r}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 1 && lines.All(l => l.StartsWith("diffkeeper: ", StringComparison.Ordinal) && l.Length <= 1100),
            $"expected bounded 'diffkeeper: ' lines only: {r}");
        return r;
    }

    private void VerifyFails(string trace) => Assert.Equal(5, Cli.Run(_dir.Path, "verify", "--read-data", "--trace", trace).ExitCode);

    [Fact]
    public void A_fifo_in_place_of_a_pack_is_refused_not_waited_on()
    {
        var t = Damaged("");
        var pack = Packs(t).MaxBy(p => new FileInfo(p).Length)!; // record may leave more than one (its compaction)
        File.Delete(pack);
        Assert.Equal(0, Process.Start("mkfifo", [pack])!.WaitForExitAndCode());
        VerifyFails(t);
        Fails(5, "export", "--trace", t, "--out", Fresh);
        Fails(5, "show", "--trace", t, "a.txt");
        Fails(5, "restore", "--store", t, "--state-dir", Fresh);
    }

    [Fact]
    public void A_fifo_in_place_of_the_catalog_is_no_trace_and_does_not_block()
    {
        var t = Damaged("");
        File.Delete(Path.Combine(t, "catalog.db"));
        Assert.Equal(0, Process.Start("mkfifo", [Path.Combine(t, "catalog.db")])!.WaitForExitAndCode());
        Fails(5, "timeline", "--trace", t);
    }

    [Fact]
    public void Verify_rejects_an_extent_longer_than_its_blob()
    {
        var t = Damaged("UPDATE blobs SET raw_len = raw_len + 1 WHERE id = (SELECT min(id) FROM blobs)");
        VerifyFails(t);
        Fails(5, "export", "--trace", t, "--out", Fresh);
    }

    [Fact]
    public void Verify_rejects_a_path_below_a_recorded_symlink()
    {
        var t = Damaged("UPDATE paths SET rel = 'l/b' WHERE rel = 'd/b'");
        VerifyFails(t);
        Fails(7, "export", "--trace", t, "--out", Fresh);
    }

    [Fact]
    public void Verify_rejects_an_unknown_version_kind()
    {
        var t = Damaged("UPDATE versions SET kind = 7 WHERE path_id = (SELECT id FROM paths WHERE rel = 'a.txt')");
        VerifyFails(t);
        Fails(5, "export", "--trace", t, "--out", Fresh);
        Fails(5, "restore", "--store", t, "--state-dir", Fresh);
    }

    [Fact]
    public void Verify_rejects_a_non_integer_event_seq()
    {
        var t = Damaged("UPDATE events SET seq = '5x' WHERE seq = (SELECT max(seq) FROM events)");
        VerifyFails(t);
        Fails(5, "export", "--trace", t, "--time", "end", "--out", Fresh);
    }

    /// <summary>
    /// A write run (store format 7) cut short, and one that claims events into the row after it: every reader of
    /// events says which row in one line (exit 5); none shows a wrong timeline.
    /// </summary>
    [Theory]
    [InlineData("x'05'")]
    [InlineData("x'FF1F' || x'00'")]
    public void A_damaged_write_run_is_refused_naming_its_row(string run)
    {
        // The first row of a file's content (inotify holds a CREATE back and merges the writes after it into it, so
        // whether the fixture has WRITE rows depends on timing): made a WRITE, with the damaged run.
        var t = Damaged($"""
            UPDATE events SET op = 2, run = CAST({run} AS BLOB)
            WHERE seq = (SELECT min(seq) FROM events WHERE op IN (1, 2) AND path2_id IS NULL AND detail IS NULL)
            """);
        VerifyFails(t);
        var r = Fails(5, "timeline", "--trace", t);
        Assert.Contains("events row 1/", r.Stderr, StringComparison.Ordinal);
        Fails(5, "log", "--trace", t, "a.txt");
        Fails(5, "report", "--trace", t, "--out", Fresh + ".html");
    }

    [Fact]
    public void Gc_refuses_to_cut_a_pack_whose_committed_size_is_below_its_records()
    {
        var t = Damaged("UPDATE packs SET committed_size = 200");
        var before = Packs(t).ToDictionary(p => p, p => new FileInfo(p).Length);
        VerifyFails(t);
        Fails(5, "gc", "--trace", t);
        Assert.All(before, kv => Assert.Equal(kv.Value, new FileInfo(kv.Key).Length));
    }

    private sealed class Compacted() : ScriptedTrace(
        "echo one > a.txt; mkdir -p d/e; head -c 200000 /dev/urandom > d/big; ln -s a.txt l; echo two >> a.txt",
        "dd if=/dev/urandom of=d/big bs=1000 count=5 seek=50 conv=notrunc 2>/dev/null; rm l; mv a.txt d/e/a2");

    /// <summary>
    /// Regression (found by the mutation harness, seed 20261207, mutation 22 "delete blobs row 7"): in a compacted trace
    /// with the row of a blob that a later version's chunk list or a delta names deleted, gc's compaction looked the
    /// row up and ended in a stack trace (exit 1). A missing row is damage for verify to report; gc builds no delta on
    /// it, and a command that meets one says so in one line (exit 5).
    /// </summary>
    [Fact]
    public void Gc_of_a_compacted_trace_missing_any_one_blob_row_ends_without_a_stack_trace()
    {
        using var compacted = new Compacted();
        Cli.Ok(_dir.Path, "gc", "--trace", compacted.Trace);
        List<long> rows = [];
        using (var db = SqliteDatabase.Open(Path.Combine(compacted.Trace, "catalog.db"), readOnly: true))
        using (var r = db.Prepare("SELECT id FROM blobs ORDER BY id"))
        {
            while (r.Step())
            {
                rows.Add(r.Int64(0));
            }
        }

        foreach (var row in rows)
        {
            var t = _dir.Sub($"missing-{row}");
            StoreFiles.CopyDirectory(compacted.Trace, t);
            using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
            {
                db.Execute($"DELETE FROM blobs WHERE id = {row}");
            }

            var gc = Cli.Run(_dir.Path, "gc", "--trace", t);
            var lines = gc.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.True(gc.ExitCode is 0 or 5 && lines.All(l => l.StartsWith("diffkeeper: ", StringComparison.Ordinal) && l.Length <= 1100),
                $"blob row {row} deleted: {gc}");
            var verify = Cli.Run(_dir.Path, "verify", "--read-data", "--trace", t).ExitCode;
            Assert.True(verify == 5 || (verify == 0 && gc.ExitCode == 0), $"blob row {row} deleted: verify exited {verify}, gc {gc}");
        }
    }

    [Theory]
    [InlineData("UPDATE blobs SET offset = -5")]
    [InlineData("UPDATE versions SET size = 4611686018427387904 WHERE kind = 1")]
    [InlineData("UPDATE packs SET committed_size = -1")]
    [InlineData("UPDATE versions SET mode = 'rw' WHERE kind = 1")]
    public void Catalog_integers_outside_their_domain_exit_5_with_one_line(string sql)
    {
        var t = Damaged(sql);
        VerifyFails(t);
        if (!sql.Contains("packs", StringComparison.Ordinal))
        {
            Fails(5, "export", "--trace", t, "--out", Fresh); // export never reads committed sizes
        }

        Fails(5, "gc", "--trace", Damaged(sql));
    }

    [Theory]
    [InlineData("events")]
    [InlineData("packs")]
    [InlineData("versions")]
    public void A_missing_table_exits_5(string table)
    {
        var t = Damaged($"DROP TABLE {table}");
        Fails(5, "verify", "--trace", t);
        Fails(5, "export", "--trace", t, "--out", Fresh);
        Fails(5, "gc", "--trace", t);
    }

    [Fact]
    public void An_extent_count_bomb_is_refused_without_following_the_count()
    {
        // 5,000,000 extents of one byte each in a 15 MB field: more than the documented bound of 4,194,304.
        const int count = 5_000_000;
        var map = new List<byte>(count * 3 + 4);
        for (var v = (uint)count; ; v >>= 7)
        {
            map.Add((byte)(v < 0x80 ? v : (v & 0x7F) | 0x80));
            if (v < 0x80)
            {
                break;
            }
        }

        for (var i = 0; i < count; i++)
        {
            map.AddRange([0, 1, 1]);
        }

        var t = Damaged("");
        using (var db = SqliteDatabase.Open(Path.Combine(t, "catalog.db"), readOnly: false))
        using (var update = db.Prepare($"UPDATE versions SET extents = ?1, size = {count} WHERE path_id = (SELECT id FROM paths WHERE rel = 'a.txt')"))
        {
            update.Bind(1, map.ToArray()).Run();
        }

        VerifyFails(t);
        var r = Fails(5, "export", "--trace", t, "--out", Fresh);
        Assert.Contains("extent map", r.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void A_delta_cycle_is_one_short_line()
    {
        // Two blobs that are each other's delta base: decoding follows the chain until its depth bound.
        var t = Damaged("""
            UPDATE blobs SET codec = 2, bases = x'0102' WHERE id = 1;
            UPDATE blobs SET codec = 2, bases = x'0101' WHERE id = 2;
            """);
        VerifyFails(t);
        var r = Fails(5, "export", "--trace", t, "--out", Fresh);
        Assert.True(r.Stderr.Length < 600, r.Stderr);
    }

    [Fact]
    public async Task Show_stops_at_a_closed_pipe()
    {
        var work = _dir.Sub("sparse");
        Directory.CreateDirectory(work);
        var trace = _dir.Sub("sparse-trace");
        Cli.Ok(_dir.Path, "record", "-q", "--capture", "inotify", "--trace", trace, "--watch", work, "--", "truncate", "-s", "1T", Path.Combine(work, "big"));
        // 1 TiB of zeros would take minutes; after head leaves, show must end at once and quietly.
        var (exit, stdout, stderr) = await Pipeline("sh", $"'{Cli.Executable}' show --trace '{trace}' big | head -c 100 | wc -c", "show");
        Assert.Equal("100", stdout.Trim());
        Assert.Equal("", stderr);
        Assert.Equal(0, exit);
    }

    /// <summary>Runs a shell pipeline; fails when it has not ended within a minute (the reader left, the writer did not stop).</summary>
    private static async Task<(int Exit, string Stdout, string Stderr)> Pipeline(string shell, string script, string what)
    {
        var psi = new ProcessStartInfo(shell, ["-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync(TestContext.Current.CancellationToken);
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), $"{what} went on writing after its reader left");
        return (p.ExitCode, await stdout, await stderr);
    }

    [Theory]
    [InlineData("timeline")]
    [InlineData("timeline --json")]
    public async Task Every_report_stops_quietly_at_a_closed_pipe(string command)
    {
        var work = _dir.Sub("many");
        Directory.CreateDirectory(work);
        var trace = _dir.Sub("many-trace");
        // Enough lines (~200 KB) that the output passes the pipe's buffer after head has left.
        Cli.Ok(_dir.Path, "record", "-q", "--capture", "inotify", "--trace", trace, "--watch", work, "--",
            "sh", "-c", $"cd '{work}'; for i in $(seq 1 2000); do echo $i > f$i; done");

        // timeline | head used to end with "diffkeeper: an operating system call failed: broken pipe", exit 10.
        var (_, stdout, stderr) = await Pipeline("bash", $"'{Cli.Executable}' {command} --trace '{trace}' | head -c 10 > /dev/null; echo ${{PIPESTATUS[0]}}", command);
        Assert.Equal("", stderr);
        Assert.Equal("0", stdout.Trim());
    }

    [Fact]
    public void Gc_and_prune_of_a_missing_trace_exit_3_and_create_nothing()
    {
        var missing = _dir.Sub("nosuch");
        Fails(3, "gc", "--trace", missing);
        Fails(3, "prune", "--trace", missing, "--keep-last", "1");
        Assert.False(Directory.Exists(missing));
    }

    [Fact]
    public void The_next_export_removes_what_an_interrupted_export_left()
    {
        var parent = _dir.Sub("exports");
        Directory.CreateDirectory(parent);
        var left = Path.Combine(parent, ".out.dk-tmp-0123456789ab");
        Directory.CreateDirectory(Path.Combine(left, "d"));
        File.WriteAllText(Path.Combine(left, "d", "half"), "half-written");
        Cli.Ok(_dir.Path, "export", "--trace", fixture.Trace, "--out", Path.Combine(parent, "out"));
        Assert.Equal(["out"], Directory.EnumerateFileSystemEntries(parent).Select(p => Path.GetFileName(p)).ToArray());
        Assert.Equal("hello\n", File.ReadAllText(Path.Combine(parent, "out", "a.txt")));
    }

    [Fact]
    public void A_trace_writable_by_others_gets_a_warning()
    {
        var t = Damaged("");
        File.SetUnixFileMode(t, (UnixFileMode)0x1FF);
        var r = Cli.Ok(_dir.Path, "timeline", "--trace", t);
        Assert.Contains("diffkeeper: warning: ", r.Stderr, StringComparison.Ordinal);
        Assert.Contains("writable by every user", r.Stderr, StringComparison.Ordinal);
        File.SetUnixFileMode(t, (UnixFileMode)0x1C0);
        Assert.DoesNotContain("warning", Cli.Ok(_dir.Path, "timeline", "--trace", t).Stderr, StringComparison.Ordinal);
    }
}

internal static class ProcessExit
{
    public static int WaitForExitAndCode(this Process p)
    {
        using (p)
        {
            p.WaitForExit();
            return p.ExitCode;
        }
    }
}
