using System.Text.Json;
using DiffKeeper.Core;

namespace DiffKeeper.IntegrationTests.Faults;

/// <summary>
/// The scripted recording the fault layer runs under: three `record` sessions into one trace (inotify unless told
/// otherwise: the regression tests' fault points are call counts of an inotify run), each a
/// fixed shell script over fixed data (a few hundred KB made from seed 13) that creates, appends, overwrites,
/// renames, truncates, deletes and links, one step at a time (50 ms apart, so each step is its own event and a run
/// gives the same events as any other), and exits with its own code. Session 1 makes the trace (and its baseline);
/// session 2 adds to it; session 3 is the "write more" after a fault.
/// </summary>
public sealed class FaultWorkload
{
    public static readonly int[] ExitCodes = [3, 4, 0];

    // Each step is one change the recorder sees whole: new files are made in a staging directory beside the watched
    // tree and renamed in, an append or overwrite is one write(2). So the tree passes through exactly the states after
    // each step, which the check knows (<see cref="States"/>).
    private static readonly string[][] Scripts =
    [
        [
            "cp \"$s/a\" \"$t/a\"; mv \"$t/a\" a",
            "cat \"$s/b\" >> a",
            "mkdir d",
            "cp \"$s/c\" \"$t/c\"; mv \"$t/c\" d/c",
            "mv a d/a2",
            "printf small > \"$t/small\"; mv \"$t/small\" small",
            "dd if=\"$s/b\" of=d/c bs=4096 seek=3 count=1 conv=notrunc status=none",
            "rm small",
            "truncate -s 10000 d/c",
            "ln -s d/a2 link",
        ],
        [
            "cat \"$s/b\" >> d/a2",
            "cp \"$s/c\" \"$t/base\"; mv \"$t/base\" base",
            "mv d e",
            "rm link",
            "chmod 600 e/c",
        ],
        [
            "head -c 30000 \"$s/a\" > \"$t/g\"; mv \"$t/g\" g",
            "cat \"$s/b\" >> g",
            "rm e/c",
        ],
    ];

    public FaultWorkload(string dir, string capture = "inotify")
    {
        Dir = dir;
        Capture = capture;
        Directory.CreateDirectory(Work);
        Directory.CreateDirectory(Source);
        Directory.CreateDirectory(Staging);
        var random = new Random(13);
        foreach (var (name, size) in new[] { ("a", 100_000), ("b", 50_000), ("c", 80_000) })
        {
            var bytes = new byte[size];
            random.NextBytes(bytes);
            File.WriteAllBytes(Path.Combine(Source, name), bytes);
        }

        var baseline = new byte[65_536];
        random.NextBytes(baseline);
        File.WriteAllBytes(Path.Combine(Work, "base"), baseline);
        for (var i = 0; i < Scripts.Length; i++)
        {
            File.WriteAllText(ScriptPath(i + 1), $"set -e\ncd \"$1\"; s=\"$2\"; t=\"$3\"\n{string.Join("; sleep 0.05\n", Steps(i))}\nexit {ExitCodes[i]}\n");
        }
    }

    /// <summary>The steps of script <paramref name="i"/> (0-based), the last writing its marker file.</summary>
    private static IEnumerable<string> Steps(int i) => Scripts[i].Append($"echo s{i + 1} > \"$t/marker\"; mv \"$t/marker\" marker{i + 1}");

    public string Dir { get; }

    /// <summary>The capture backend `record` is given.</summary>
    public string Capture { get; }

    public string Work => Path.Combine(Dir, "work");

    public string Trace => Path.Combine(Dir, "trace");

    private string Source => Path.Combine(Dir, "src");

    private string Staging => Path.Combine(Dir, "stage");

    public static int Sessions => Scripts.Length;

    private string ScriptPath(int session) => Path.Combine(Dir, $"s{session}.sh");

    public string Log(int session) => Path.Combine(Dir, $"faults-{session}.log");

    /// <summary>Records session <paramref name="session"/> (1-based) with the layer loaded; <paramref name="fault"/> null faults nothing.</summary>
    public Cli.Result Record(int session, FaultPoint? fault, bool traceAll, string? arm = null, params string[] options) =>
        Cli.Run(FaultLayer.Environment(Trace, fault, Log(session), traceAll, arm), Dir,
            ["record", "-q", "--capture", Capture, "--trace", Trace, "--watch", Work, .. options, "--", "sh", ScriptPath(session), Work, Source, Staging]);

    /// <summary>The marker file session <paramref name="session"/>'s command makes last.</summary>
    public string Marker(int session) => Path.Combine(Work, $"marker{session}");

    /// <summary>True when the command of <paramref name="session"/> ran to its end.</summary>
    public bool CommandRan(int session) => File.Exists(Marker(session));

    /// <summary>Runs a session's script without recording it (after a `record` that could not open the trace and so did not run it).</summary>
    public void RunUnrecorded(int session)
    {
        using var p = System.Diagnostics.Process.Start("sh", [ScriptPath(session), Work, Source, Staging])!;
        p.WaitForExit();
    }

    /// <summary>
    /// The states the watched tree passes through, mtimes left out: per session, the tree at its start and after each
    /// step (the last one with its marker file). Made by running the steps one by one without recording.
    /// </summary>
    public List<List<SortedDictionary<string, Entry>>> States()
    {
        var states = new List<List<SortedDictionary<string, Entry>>>();
        for (var i = 0; i < Scripts.Length; i++)
        {
            var session = new List<SortedDictionary<string, Entry>> { WithoutTimes(TreeSnapshot.Take(Work)) };
            foreach (var step in Steps(i))
            {
                using var p = System.Diagnostics.Process.Start("sh", ["-c", $"set -e; cd \"$1\"; s=\"$2\"; t=\"$3\"; {step}", "sh", Work, Source, Staging])!;
                p.WaitForExit();
                if (p.ExitCode != 0)
                {
                    throw new InvalidOperationException($"step '{step}' failed");
                }

                session.Add(WithoutTimes(TreeSnapshot.Take(Work)));
            }

            states.Add(session);
        }

        return states;
    }

    /// <summary>The session of the trace that recorded script <paramref name="session"/>, or null.</summary>
    public RecordedState? Observe(int session, bool exports)
    {
        var list = Cli.Run(Dir, "sessions", "--trace", Trace, "--json");
        if (list.ExitCode != 0)
        {
            return null;
        }

        var found = Cli.JsonLines(list).FirstOrDefault(s => s.GetProperty("command").GetString()!.Contains($"/s{session}.sh ", StringComparison.Ordinal));
        if (found.ValueKind == JsonValueKind.Undefined)
        {
            return null;
        }

        var id = found.GetProperty("session").GetInt64().ToString(System.Globalization.CultureInfo.InvariantCulture);
        var events = Cli.JsonLines(Cli.Ok(Dir, "timeline", "--trace", Trace, "--session", id, "--json"))
            .Select(e => new RecordedEvent(e.GetProperty("seq").GetInt64(), e.GetProperty("op").GetString()!, e.GetProperty("path").GetString(),
                e.GetProperty("path2").GetString(), e.GetProperty("size").ValueKind == JsonValueKind.Number ? e.GetProperty("size").GetInt64() : null,
                e.GetProperty("detail").GetString()))
            .ToList();
        var trees = new Dictionary<long, SortedDictionary<string, Entry>>();
        if (exports)
        {
            foreach (var seq in events.Select(e => e.Seq).Prepend(0))
            {
                trees[seq] = Export(id, seq);
            }
        }

        return new RecordedState(id, found.GetProperty("state").GetString()!,
            found.GetProperty("exit_code").ValueKind == JsonValueKind.Number ? found.GetProperty("exit_code").GetInt32() : null, events, trees);
    }

    /// <summary>The tree `export` rebuilds right after event <paramref name="seq"/> (0: the start), mtimes left out (they differ between runs).</summary>
    public SortedDictionary<string, Entry> Export(string session, long seq)
    {
        var output = Path.Combine(Dir, $"export-{session}-{seq}");
        try
        {
            Cli.Ok(Dir, "export", "--trace", Trace, "--session", session, "--time", seq == 0 ? "start" : $"#{seq}", "--out", output);
            return WithoutTimes(TreeSnapshot.Take(output));
        }
        finally
        {
            DiffKeeper.Storage.Tests.TempDir.Remove(output);
        }
    }

    public static SortedDictionary<string, Entry> WithoutTimes(SortedDictionary<string, Entry> tree) =>
        new(tree.ToDictionary(e => e.Key, e => e.Value with { MtimeNs = 0 }), StringComparer.Ordinal);
}

/// <summary>One timeline event as compared between runs (times and pids differ; these must not).</summary>
public sealed record RecordedEvent(long Seq, string Op, string? Path, string? Path2, long? Size, string? Detail)
{
    public override string ToString() => $"#{Seq} {Op} {Path}{(Path2 is null ? "" : " -> " + Path2)} {Size} {Detail}";
}

/// <summary>What a trace holds of one session: its events and the tree export rebuilds at each (keyed by seq, 0 the start).</summary>
public sealed record RecordedState(string Id, string State, int? ExitCode, List<RecordedEvent> Events, Dictionary<long, SortedDictionary<string, Entry>> Trees);
