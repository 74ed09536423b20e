using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `timeline`: filters by pid, program, op and time (the exit line included), folding of write bursts, and the
/// Chrome trace-event export checked against the Trace Event Format's rules. Recorded under eBPF, the backend that
/// knows each write's process.
/// </summary>
public sealed class TimelineFilterTests : IDisposable
{
    private readonly TempDir _dir = new();

    public TimelineFilterTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private void Record()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("the eBPF backend needs root (CAP_BPF and CAP_PERFMON); this test runs as " + Environment.UserName);
        }

        // sh's builtin echo: five write(2) calls on one descriptor, back to back; then cp and truncate, other programs.
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c",
            "for i in 1 2 3 4 5; do echo line $i; done > burst.log; cp burst.log copy.log; sleep 0.2; truncate -s 0 burst.log");
    }

    private List<JsonElement> Json(params string[] args) =>
        Cli.Ok(Work, ["timeline", "--trace", Trace, "--json", .. args]).Lines.Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    private string[] Text(params string[] args) => Cli.Ok(Work, ["timeline", "--trace", Trace, .. args]).Lines;

    [Fact]
    public void A_burst_of_writes_is_one_line_unless_no_fold_and_filters_pick_processes_ops_and_times()
    {
        Record();
        var all = Json();
        var writes = all.Where(e => e.GetProperty("op").GetString() == "WRITE" && e.GetProperty("path").GetString() == "burst.log").ToList();
        Assert.Equal(5, writes.Count);

        var folded = Text().Where(l => l.Contains("WRITE    burst.log", StringComparison.Ordinal)).ToList();
        var line = Assert.Single(folded);
        Assert.Contains("x5 writes, 35 B in ", line, StringComparison.Ordinal); // eBPF knows each length: 5 x 7 bytes
        Assert.EndsWith($"#{writes[0].GetProperty("seq")}-#{writes[4].GetProperty("seq")}", line, StringComparison.Ordinal);
        Assert.Contains("35 B", line, StringComparison.Ordinal); // the size after the last write: 5 x "line N\n"
        Assert.Equal(5, Text("--no-fold").Count(l => l.Contains("WRITE    burst.log", StringComparison.Ordinal)));

        // --comm and --pid: that program's events, and the exit line.
        var cp = Json("--comm", "cp");
        Assert.All(cp.SkipLast(1), e => Assert.Equal("cp", e.GetProperty("comm").GetString()));
        Assert.Contains(cp, e => e.GetProperty("path").GetString() == "copy.log");
        Assert.Equal("EXIT", cp[^1].GetProperty("op").GetString());
        var pid = cp[0].GetProperty("pid").GetInt32();
        Assert.Equal(cp.Select(e => e.GetProperty("seq").GetInt64()), Json("--pid", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)).Select(e => e.GetProperty("seq").GetInt64()));
        Assert.Single(Json("--comm", "no-such-program")); // only the exit
        Assert.Equal(2, Json("--comm", "c?", "--comm", "trunc*").Select(e => e.GetProperty("comm").GetString()).Where(c => c is not null).Distinct().Count());

        // --op: a list, any case; the exit line only when asked for.
        var ops = Json("--op", "truncate,EXIT").Select(e => e.GetProperty("op").GetString()).ToList();
        Assert.Equal(["TRUNCATE", "EXIT"], ops);
        Assert.DoesNotContain("EXIT", Json("--op", "WRITE").Select(e => e.GetProperty("op").GetString()));

        // --since/--until apply to the exit too.
        var truncate = all.Single(e => e.GetProperty("op").GetString() == "TRUNCATE");
        var before = Json("--until", $"#{truncate.GetProperty("seq").GetInt64() - 1}");
        Assert.DoesNotContain(before, e => e.GetProperty("op").GetString() is "EXIT" or "TRUNCATE");
        Assert.Equal(["TRUNCATE", "EXIT"], Json("--since", $"#{truncate.GetProperty("seq")}").Select(e => e.GetProperty("op").GetString()));
    }

    [Theory]
    [InlineData("--since", "#3", "--until", "#1")]
    [InlineData("--since", "2s", "--until", "1s")]
    [InlineData("--since", "end", "--until", "start")]
    public void An_inverted_range_is_a_usage_error(string a, string x, string b, string y)
    {
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo 1 > a; echo 2 > b; echo 3 > c");
        var r = Cli.Run(Work, "timeline", "--trace", Trace, a, x, b, y);
        Assert.Equal(2, r.ExitCode);
        Assert.Equal($"diffkeeper: --since {x} is after --until {y}: the range holds nothing; swap them\n", r.Stderr);
    }

    [Fact]
    public void An_unknown_op_and_a_format_clash_are_usage_errors()
    {
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "true");
        var op = Cli.Run(Work, "timeline", "--trace", Trace, "--op", "WRITE,SCRIBBLE");
        Assert.Equal(2, op.ExitCode);
        Assert.StartsWith("diffkeeper: --op expects one of CREATE, WRITE,", op.Stderr, StringComparison.Ordinal);
        Assert.EndsWith("got 'SCRIBBLE'\n", op.Stderr, StringComparison.Ordinal);
        var format = Cli.Run(Work, "timeline", "--trace", Trace, "--format", "xml");
        Assert.Equal(2, format.ExitCode);
        Assert.StartsWith("diffkeeper: --format expects one of text, json, chrome-trace, got 'xml'", format.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, Cli.Run(Work, "timeline", "--trace", Trace, "--json", "--format", "chrome-trace").ExitCode);
    }

    [Fact]
    public void Ops_are_coloured_only_on_a_terminal_and_never_with_NO_COLOR_and_the_terminal_modes_are_left_alone()
    {
        if (!File.Exists("/usr/bin/script"))
        {
            Assert.Skip("util-linux's script (/usr/bin/script) is missing: no pseudo-terminal to run the timeline on");
        }

        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo 1 > a");
        string OnTerminal(string env)
        {
            var psi = new System.Diagnostics.ProcessStartInfo("script", ["-qec", $"env TERM=xterm {env} '{Cli.Executable}' timeline --trace '{Trace}'", "/dev/null"])
            {
                RedirectStandardOutput = true,
                RedirectStandardInput = true,
            };
            using var p = System.Diagnostics.Process.Start(psi)!;
            p.StandardInput.Close();
            var output = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return output;
        }

        var coloured = OnTerminal("");
        Assert.Contains("\u001b[32mCREATE  \u001b[0m a", coloured, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b[?", coloured, StringComparison.Ordinal); // no mode changes (keypad-transmit and the like)
        Assert.DoesNotContain("\u001b=", coloured, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", OnTerminal("NO_COLOR=1"), StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", Cli.Ok(Work, "timeline", "--trace", Trace).Stdout, StringComparison.Ordinal); // a pipe
    }

    [Fact]
    public void The_chrome_trace_follows_the_trace_event_format()
    {
        Record();
        var root = JsonDocument.Parse(Cli.Ok(Work, "timeline", "--trace", Trace, "--format", "chrome-trace").Stdout).RootElement;
        var events = TraceEventFormat.Check(root);

        var burst = Assert.Single(events, e => e.GetProperty("ph").GetString() == "X");
        Assert.Equal("WRITE burst.log", burst.GetProperty("name").GetString());
        Assert.Equal(5, burst.GetProperty("args").GetProperty("count").GetInt32());
        Assert.Equal("burst.log", burst.GetProperty("args").GetProperty("path").GetString());
        var names = events.Where(e => e.GetProperty("ph").GetString() == "M" && e.GetProperty("name").GetString() == "process_name")
            .Select(e => e.GetProperty("args").GetProperty("name").GetString()!).ToList();
        Assert.Contains(names, n => n.StartsWith("cp (", StringComparison.Ordinal));
        Assert.Contains(names, n => n.StartsWith("truncate (", StringComparison.Ordinal));
        var exit = Assert.Single(events, e => e.TryGetProperty("cat", out var cat) && cat.GetString() == "EXIT");
        Assert.Equal("g", exit.GetProperty("s").GetString());
        Assert.Equal(0, exit.GetProperty("args").GetProperty("exit_code").GetInt32());

        // --no-fold: every write an instant event; filters apply as in text.
        var unfolded = TraceEventFormat.Check(JsonDocument.Parse(Cli.Ok(Work, "timeline", "--trace", Trace, "--format", "chrome-trace", "--no-fold", "--op", "WRITE").Stdout).RootElement);
        Assert.Equal(5, unfolded.Count(e => e.GetProperty("name").GetString() == "WRITE burst.log" && e.GetProperty("ph").GetString() == "i"));
    }
}

/// <summary>
/// The rules of the Trace Event Format (the JSON object form) that chrome://tracing and Perfetto's importer rely
/// on, checked on a whole document. Returns its events.
/// </summary>
internal static class TraceEventFormat
{
    private static readonly string[] Phases = ["B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "P", "N", "O", "D", "M", "R", "c"];

    public static List<JsonElement> Check(JsonElement root)
    {
        Assert.Equal(JsonValueKind.Object, root.ValueKind);
        Assert.Equal(JsonValueKind.Array, root.GetProperty("traceEvents").ValueKind);
        if (root.TryGetProperty("displayTimeUnit", out var unit))
        {
            Assert.Contains(unit.GetString(), new[] { "ms", "ns" });
        }

        var events = root.GetProperty("traceEvents").EnumerateArray().ToList();
        var namedProcesses = new HashSet<long>();
        var usedProcesses = new HashSet<long>();
        var spans = new Dictionary<(long, long), List<(double Start, double End)>>();
        foreach (var e in events)
        {
            Assert.Equal(JsonValueKind.Object, e.ValueKind);
            var ph = e.GetProperty("ph").GetString()!;
            Assert.Contains(ph, Phases);
            Assert.Equal(JsonValueKind.String, e.GetProperty("name").ValueKind);
            var pid = e.GetProperty("pid").GetInt64();
            var tid = e.GetProperty("tid").GetInt64();
            if (e.TryGetProperty("args", out var args))
            {
                Assert.Equal(JsonValueKind.Object, args.ValueKind);
            }

            if (ph == "M")
            {
                var name = e.GetProperty("name").GetString();
                Assert.Contains(name, new[] { "process_name", "process_labels", "process_sort_index", "thread_name", "thread_sort_index" });
                if (name is "process_name" or "thread_name")
                {
                    Assert.Equal(JsonValueKind.String, args.GetProperty("name").ValueKind);
                }

                if (name == "process_name")
                {
                    namedProcesses.Add(pid);
                }

                continue;
            }

            usedProcesses.Add(pid);
            var ts = e.GetProperty("ts").GetDouble();
            Assert.True(ts >= 0, $"ts {ts} is negative");
            if (ph == "X")
            {
                var dur = e.GetProperty("dur").GetDouble();
                Assert.True(dur >= 0, $"dur {dur} is negative");
                if (!spans.TryGetValue((pid, tid), out var list))
                {
                    spans[(pid, tid)] = list = [];
                }

                list.Add((ts, ts + dur));
            }

            if (ph is "i" or "I" && e.TryGetProperty("s", out var scope))
            {
                Assert.Contains(scope.GetString(), new[] { "g", "p", "t" });
            }

            if (e.GetProperty("cat").GetString() is not "EXIT" and not "LOST")
            {
                Assert.Equal(JsonValueKind.String, args.GetProperty("path").ValueKind);
                Assert.Equal(JsonValueKind.Number, args.GetProperty("seq").ValueKind);
            }
        }

        Assert.Subset(namedProcesses, usedProcesses); // every track has a name

        // Complete events on one thread must nest (the importer builds a stack per thread): never overlap partially.
        foreach (var list in spans.Values)
        {
            var sorted = list.OrderBy(s => s.Start).ToList();
            for (var i = 1; i < sorted.Count; i++)
            {
                Assert.True(sorted[i].Start >= sorted[i - 1].End || sorted[i].End <= sorted[i - 1].End,
                    $"complete events [{sorted[i - 1].Start}, {sorted[i - 1].End}] and [{sorted[i].Start}, {sorted[i].End}] overlap without nesting");
            }
        }

        return events;
    }
}
