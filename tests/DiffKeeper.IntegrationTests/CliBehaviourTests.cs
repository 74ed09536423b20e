using DiffKeeper.Storage.Packs;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>Exit codes, one-line errors, and what the commands print, through the real executable.</summary>
public sealed class CliBehaviourTests : IDisposable
{
    private readonly TempDir _dir = new();

    public CliBehaviourTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private Cli.Result Record(params string[] command) =>
        Cli.Run(Work, ["record", "--trace", Trace, "--", .. command]);

    [Theory]
    [InlineData("exit 0", 0, "exit status 0")]
    [InlineData("exit 7", 7, "exit status 7")]
    [InlineData("exit 137", 137, "exit status 137")] // an exit code above 128 is not a signal
    [InlineData("kill -9 $$", 137, "killed by SIGKILL")]
    [InlineData("kill -TERM $$", 143, "killed by SIGTERM")]
    public void Record_exits_with_the_commands_status_and_the_timeline_ends_with_it(string script, int code, string last)
    {
        var r = Record("sh", "-c", "echo data > out.txt; " + script);
        Assert.Equal(code, r.ExitCode);
        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace).Lines;
        Assert.EndsWith(" " + last, timeline[^1]);
        Assert.Contains("EXIT", timeline[^1]);
        Assert.EndsWith(" · " + last, timeline[0]); // the session's header says the same
        Assert.Contains("  " + last, Cli.Ok(Work, "sessions", "--trace", Trace).Stdout, StringComparison.Ordinal);
        Assert.Contains(timeline, l => l.Contains("CREATE", StringComparison.Ordinal) && l.Contains("out.txt", StringComparison.Ordinal));
    }

    [Fact]
    public void A_command_that_cannot_run_gives_127_or_126_and_still_leaves_a_session()
    {
        var missing = Record("definitely-not-a-command-dk");
        Assert.Equal(127, missing.ExitCode);
        Assert.Contains("command not found", missing.Stderr);
        File.WriteAllText(Path.Combine(Work, "not-exec.sh"), "echo hi\n");
        var noexec = Record("./not-exec.sh");
        Assert.Equal(126, noexec.ExitCode);
        Assert.Equal(2, Cli.Ok(Work, "sessions", "--trace", Trace).Lines.Length);
    }

    [Fact]
    public void The_command_gets_stdin_and_stdout_of_the_caller()
    {
        using var p = Cli.Start(Work, "record", "--trace", Trace, "--", "sh", "-c", "read line; echo \"got $line\"; echo err >&2");
        p.StandardInput.WriteLine("hello");
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEnd();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.Equal("got hello\n", stdout);
        Assert.StartsWith("err\n", stderr);
        Assert.Equal(0, p.ExitCode);
    }

    [Fact]
    public void Sigterm_to_record_is_forwarded_and_the_trace_is_finished()
    {
        using var p = Cli.Start(Work, "record", "--trace", Trace, "--", "sh", "-c", "trap 'echo bye > bye.txt; exit 42' TERM; touch ready; while true; do sleep 0.05; done");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(Path.Combine(Work, "ready")) && sw.Elapsed < TimeSpan.FromSeconds(30))
        {
            Thread.Sleep(20);
        }

        Assert.Equal(0, DiffKeeper.Native.Interop.Libc.Kill(p.Id, 15));
        Assert.True(p.WaitForExit(20_000));
        Assert.Equal(42, p.ExitCode);
        Assert.Equal("bye\n", Cli.Ok(Work, "show", "--trace", Trace, "bye.txt").Stdout);
        Assert.Contains("exit status 42", Cli.Ok(Work, "timeline", "--trace", Trace).Lines[^1]);
    }

    [Fact]
    public void Timeline_and_verify_work_while_a_recording_runs()
    {
        using var rec = new RecordedSession(Work, Trace, Work);
        File.WriteAllText(Path.Combine(Work, "live.txt"), "live");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        Cli.Result timeline;
        do
        {
            timeline = Cli.Ok(Work, "timeline", "--trace", Trace);
        }
        while (!timeline.Stdout.Contains("live.txt", StringComparison.Ordinal) && sw.Elapsed < TimeSpan.FromSeconds(20));
        Assert.Contains("live.txt", timeline.Stdout);
        Assert.Contains("recording now", timeline.Stdout);
        Cli.Ok(Work, "verify", "--trace", Trace);
        var second = Cli.Run(Work, "record", "--trace", Trace, "--", "true");
        Assert.Equal(4, second.ExitCode);
        Assert.Contains("being written by another diffkeeper", second.Stderr);
        Assert.Equal(0, rec.Finish().ExitCode);
    }

    [Fact]
    public void Timeline_json_has_the_documented_fields_and_filters_work()
    {
        Assert.Equal(0, Record("sh", "-c", "echo a > a.log; echo b > b.txt; sleep 0.3; echo c >> a.log").ExitCode);
        var lines = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        foreach (var field in new[] { "seq", "time_ns", "op", "path", "size", "pid", "comm" })
        {
            Assert.All(lines, l => Assert.True(l.TryGetProperty(field, out _), $"missing {field} in {l}"));
        }

        Assert.Equal(lines.Select(l => l.GetProperty("seq").GetInt64()).Order(), lines.Select(l => l.GetProperty("seq").GetInt64()));
        var logs = Cli.Ok(Work, "timeline", "--trace", Trace, "--path", "*.log").Lines.Where(l => l.StartsWith('[')).ToList();
        Assert.All(logs.SkipLast(1), l => Assert.Contains("a.log", l));
        Assert.Contains("EXIT", logs[^1]);
        var late = Cli.Ok(Work, "timeline", "--trace", Trace, "--since", "0.2s", "--json").Lines;
        Assert.All(Cli.JsonLines(new Cli.Result(0, string.Join('\n', late), "", [])).SkipLast(1), l => Assert.True(l.GetProperty("time_ns").GetInt64() >= 200_000_000));
    }

    [Fact]
    public void A_flipped_byte_is_named_by_verify_and_export_while_other_sessions_still_export()
    {
        var other = _dir.Sub("other");
        Directory.CreateDirectory(other);
        // The file arrives whole by a rename from outside the watched tree, so it is one version and the first
        // pack record is part of its final state. (Written in place, a slow machine can see it half written: that
        // read is superseded, and the first record belongs to no version the export needs.)
        File.WriteAllBytes(_dir.Sub("victim.src"), System.Security.Cryptography.RandomNumberGenerator.GetBytes(300_000));
        Assert.Equal(0, Cli.Run(Work, "record", "--trace", Trace, "--", "mv", _dir.Sub("victim.src"), "victim.bin").ExitCode);
        Assert.Equal(0, Cli.Run(other, "record", "--trace", Trace, "--", "sh", "-c", "echo safe > safe.txt").ExitCode);

        var pack = Path.Combine(Trace, PackFormat.RelativePath(1));
        var bytes = File.ReadAllBytes(pack);
        bytes[PackFormat.HeaderSize + PackFormat.RecordHeaderSize + 1000] ^= 0x40;
        File.WriteAllBytes(pack, bytes);

        var verify = Cli.Run(Work, "verify", "--trace", Trace);
        Assert.Equal(5, verify.ExitCode);
        Assert.Contains(verify.Lines, l => l.StartsWith("DAMAGED  victim.bin", StringComparison.Ordinal) && l.Contains("blob ", StringComparison.Ordinal));

        var export = Cli.Run(Work, "export", "--trace", Trace, "--session", "1", "--out", _dir.Sub("out1"));
        Assert.Equal(5, export.ExitCode);
        Assert.Single(export.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Contains("victim.bin", export.Stderr);
        Assert.False(Directory.Exists(_dir.Sub("out1")));

        Cli.Ok(Work, "export", "--trace", Trace, "--session", "2", "--out", _dir.Sub("out2"));
        Assert.Equal("safe\n", File.ReadAllText(Path.Combine(_dir.Sub("out2"), "safe.txt")));
    }

    [Theory]
    [InlineData(new[] { "timeline", "--trace", "/nonexistent/dk" }, 3)]
    [InlineData(new[] { "export", "--trace", "/nonexistent/dk", "--out", "x" }, 3)]
    [InlineData(new[] { "export", "--time", "soon", "--out", "x" }, 2)]
    [InlineData(new[] { "export" }, 2)]
    [InlineData(new[] { "frobnicate" }, 2)]
    [InlineData(new[] { "record", "--watch", "/nonexistent/dk", "--", "true" }, 2)]
    public void Bad_input_is_one_line_and_a_documented_exit_code(string[] args, int code)
    {
        var r = Cli.Run(Work, args);
        Assert.Equal(code, r.ExitCode);
        Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("diffkeeper: ", r.Stderr);
    }

    [Fact]
    public void Show_and_log_tell_a_files_history()
    {
        Assert.Equal(0, Record("sh", "-c", "printf one > f.txt; sleep 0.3; printf two > f.txt; sleep 0.3; rm f.txt").ExitCode);
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        var delete = events.First(e => e.GetProperty("op").GetString() == "DELETE").GetProperty("seq").GetInt64();
        Assert.Equal("two", Cli.Ok(Work, "show", "--trace", Trace, "f.txt", "--time", $"#{delete - 1}").Stdout);
        // Durations halfway between the writes, from the recorded times (the machine may be slow to start sh).
        var times = events.Select(e => e.GetProperty("time_ns").GetInt64()).ToList();
        var secondWrite = events.FindLastIndex(e => e.GetProperty("op").GetString() is "WRITE" or "TRUNCATE");
        var firstGap = $"{(times[0] + times[secondWrite]) / 2}ns";
        var secondGap = $"{(times[secondWrite] + times[secondWrite + 1]) / 2}ns";
        Assert.Equal("one", Cli.Ok(Work, "show", "--trace", Trace, "f.txt", "--time", firstGap).Stdout);
        Assert.Equal("two", Cli.Ok(Work, "show", "--trace", Trace, Path.Combine(Work, "f.txt"), "--time", secondGap).Stdout);
        var gone = Cli.Run(Work, "show", "--trace", Trace, "f.txt");
        Assert.Equal(8, gone.ExitCode);
        Assert.Contains("did not exist", gone.Stderr);
        var log = Cli.Ok(Work, "log", "--trace", Trace, "f.txt").Stdout;
        Assert.Contains("DELETE", log);
        Assert.Contains("absent", log);
    }

    [Fact]
    public void The_trace_directory_inside_the_watched_tree_is_never_recorded()
    {
        Assert.Equal(0, Cli.Run(Work, "record", "--trace", Path.Combine(Work, "t"), "--", "sh", "-c", "echo x > x.txt").ExitCode);
        var timeline = Cli.Ok(Work, "timeline", "--trace", Path.Combine(Work, "t")).Stdout;
        Assert.DoesNotContain("catalog", timeline);
        Assert.DoesNotContain(" t/", timeline);
        Cli.Ok(Work, "export", "--trace", Path.Combine(Work, "t"), "--out", _dir.Sub("o"));
        Assert.Equal(["x.txt"], Directory.GetFileSystemEntries(_dir.Sub("o")).Select(Path.GetFileName));
    }

    [Fact]
    public void Several_roots_export_under_their_absolute_paths()
    {
        var second = _dir.Sub("second");
        Directory.CreateDirectory(second);
        var r = Cli.Run(Work, "record", "--trace", Trace, "--watch", Work, "--watch", second, "--",
            "sh", "-c", $"echo one > one.txt; echo two > '{second}/two.txt'");
        Assert.Equal(0, r.ExitCode);
        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace).Stdout;
        Assert.Contains(Path.Combine(Work, "one.txt"), timeline);
        Assert.Contains(Path.Combine(second, "two.txt"), timeline);
        var outDir = _dir.Sub("out");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", outDir);
        Assert.Equal("one\n", File.ReadAllText(outDir + Work + "/one.txt"));
        Assert.Equal("two\n", File.ReadAllText(outDir + second + "/two.txt"));
        Assert.Equal("two\n", Cli.Ok(Work, "show", "--trace", Trace, Path.Combine(second, "two.txt")).Stdout);
    }

    [Fact]
    public void Stats_counts_raw_and_stored_bytes_and_sees_deduplication()
    {
        // The big files exist before recording (baseline versions): written during the run, inotify may also
        // record a half-written state of them, which is a real version but makes the byte count vary.
        var random = new byte[1048576];
        Random.Shared.NextBytes(random);
        File.WriteAllBytes(Path.Combine(Work, "a.bin"), random);
        File.WriteAllBytes(Path.Combine(Work, "b.bin"), random);
        Assert.Equal(0, Record("sh", "-c", "printf 'hello' > small.txt").ExitCode);
        var stats = Cli.JsonLines(Cli.Ok(Work, "stats", "--trace", Trace, "--json")).Single();
        foreach (var field in new[] { "raw_bytes", "stored_bytes", "catalog_bytes", "versions", "blobs", "dedup_ratio", "compression_ratio", "top_paths" })
        {
            Assert.True(stats.TryGetProperty(field, out _), $"missing {field}");
        }

        Assert.Equal(2 * 1048576 + 5, stats.GetProperty("raw_bytes").GetInt64());
        Assert.InRange(stats.GetProperty("stored_bytes").GetInt64(), 1048576, 1048576 + 64 * 1024);
        Assert.InRange(stats.GetProperty("dedup_ratio").GetDouble(), 1.9, 2.1);
        Assert.True(stats.GetProperty("catalog_bytes").GetInt64() > 0);
        var top = stats.GetProperty("top_paths")[0];
        Assert.Equal("a.bin", top.GetProperty("path").GetString());
        Assert.Contains("dedup 2.00×", Cli.Ok(Work, "stats", "--trace", Trace).Stdout);
    }

    [Fact]
    public void Prune_and_gc_keep_the_newest_state_and_refuse_a_pruned_moment_in_one_line()
    {
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(0, Record("sh", "-c", $"head -c 200000 /dev/zero | tr '\\0' '{i}' > state.bin; echo {i} >> state.bin").ExitCode);
        }

        var bad = Cli.Run(Work, "gc", "--trace", Trace, "--delta", "lzma");
        Assert.Equal(2, bad.ExitCode);
        Assert.Single(bad.Stderr.Trim().Split('\n'));
        Assert.Equal(2, Cli.Run(Work, "prune", "--trace", Trace).ExitCode);

        var prune = Cli.Ok(Work, "prune", "--trace", Trace, "--keep-last", "1");
        Assert.Matches("^gc: [0-9]+ versions pruned", prune.Stdout);
        Assert.Contains("pruned (content dropped", Cli.Ok(Work, "log", "--trace", Trace, "--session", "1", "state.bin").Stdout);
        var refused = Cli.Run(Work, "export", "--trace", Trace, "--session", "1", "--out", _dir.Sub("old"));
        Assert.Equal(8, refused.ExitCode);
        Assert.Contains("state.bin at event", refused.Stderr);
        Assert.Single(refused.Stderr.Trim().Split('\n'));

        Cli.Ok(Work, "export", "--trace", Trace, "--out", _dir.Sub("new"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Work, "state.bin")), File.ReadAllBytes(_dir.Sub("new/state.bin")));
        Assert.StartsWith("ok:", Cli.Ok(Work, "verify", "--trace", Trace, "--read-data").Stdout);
        Assert.StartsWith("gc:", Cli.Ok(Work, "gc", "--trace", Trace, "--delta", "bsdiff").Stdout);
    }
}
