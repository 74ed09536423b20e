using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Remote;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;

namespace DiffKeeper.Cli.Commands;

internal static class ForgetCommand
{
    /// <summary>The grace period `forget` uses by default and writers assume (docs/store-format.md, "Deleting").</summary>
    public const string GraceEnv = "DIFFKEEPER_FORGET_GRACE";

    public static Command Create(IConsole console)
    {
        var trace = new Option<string?>("--trace", "--store")
        {
            Description = $"The remote store, s3://bucket/prefix: a trace or a keep-mode store (default: ${CommonOptions.TraceEnv})",
            DefaultValueFactory = _ => Environment.GetEnvironmentVariable(CommonOptions.TraceEnv) is { Length: > 0 } env ? env : null,
            HelpName = "URL",
        };
        var session = new Option<List<long>>("--session")
        {
            Description = "Forget this session (a number as 'diffkeeper sessions --trace URL' shows it); repeatable",
            HelpName = "N",
            CustomParser = r =>
            {
                var numbers = new List<long>();
                foreach (var t in r.Tokens)
                {
                    if (!long.TryParse(t.Value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                    {
                        r.AddError($"--session expects a session number, got '{t.Value}'");
                        return [];
                    }

                    numbers.Add(n);
                }

                return numbers;
            },
        };
        var keepLast = new Option<int?>("--keep-last") { Description = "Forget every session but the newest N", HelpName = "N" }
            .Expecting("a number of sessions (1 or more)", n => n >= 1);
        var olderThan = new Option<string?>("--older-than")
        {
            Description = "Forget the sessions that started longer ago than this (30d, 12h, 90m); with --keep-last, a session either keeps is kept",
            HelpName = "DURATION",
        };
        var grace = new Option<string?>("--grace")
        {
            Description = $"Delete an object no session names only once it is older than this (default: ${GraceEnv}, else 1h); writers must assume the same",
            HelpName = "DURATION",
        };
        var dryRun = new Option<bool>("--dry-run") { Description = "Say what would be deleted; delete nothing" };
        var json = new Option<bool>("--json") { Description = "The summary as one JSON object on one line" };
        var cmd = new Command("forget", """
            Delete sessions from a remote store (s3://bucket/prefix), then the packs, indexes and segments no session
            names. Safe while other hosts upload to the store: an object no session names is deleted only
            once it is older than the grace period and no session forgotten within the grace named it (a
            writer may be about to name it), and a writer whose view of the store is older than half the
            grace lists it again before it publishes, and uploads again what was deleted. So a --grace
            shorter than the default (1h) must be given to the writers too (DIFFKEEPER_FORGET_GRACE);
            docs/store-format.md, "Deleting", says what is assumed.
            Without --session, --keep-last or --older-than, only the garbage is collected (interrupted
            uploads, older manifest generations). A keep-mode session still being written is never chosen
            by --keep-last or --older-than. Session numbers shift after a forget: list them again.
            Killing forget at any moment is safe; run it again.
            A local trace keeps its sessions: 'diffkeeper prune' drops old contents, 'gc' the garbage.
            Exit codes: 0 done, 2 usage, 3 no session in the store (with --session), 8 no such session,
            10 a request failed (run it again: it picks up where it stopped).
            """)
        {
            trace, session, keepLast, olderThan, grace, dryRun, json,
        };
        cmd.SetAction(async (pr, cancel) =>
        {
            var url = pr.GetValue(trace) ?? throw new DiffKeeperException(ExitCode.Usage, "forget needs the store: --trace s3://bucket/prefix");
            if (!S3Location.IsRemote(url))
            {
                throw new DiffKeeperException(ExitCode.Usage,
                    $"forget deletes sessions from a remote store (--trace s3://bucket/prefix), and {url} is a local trace: 'diffkeeper prune' drops its old contents, 'diffkeeper gc' its garbage");
            }

            var numbers = pr.GetValue(session) ?? [];
            var within = pr.GetValue(olderThan) is { } text ? Duration("--older-than", text) : (TimeSpan?)null;
            var selection = new ForgetSelection(numbers, pr.GetValue(keepLast), within);
            if (numbers.Count > 0 && selection.ByRule)
            {
                throw new DiffKeeperException(ExitCode.Usage, "--session names the sessions to forget, --keep-last and --older-than choose them by rule: give one or the other");
            }

            var graceSpan = pr.GetValue(grace) is { } g ? Duration("--grace", g) : GraceFromEnvironment();
            var dry = pr.GetValue(dryRun);
            using var store = S3ObjectStore.FromEnvironment(S3Location.Parse(url));
            ForgetResult r;
            using (var progress = TerminalProgress.ForStderr(console))
            {
                progress.Show("forget: listing the store");
                r = await new RemoteForget(store, RemoteCache.Root(), TimeProvider.System).RunAsync(selection, graceSpan, dry,
                    (done, total) => progress.Show(string.Create(CultureInfo.InvariantCulture, $"forget: deleted {done:N0} of {total:N0} objects")), cancel).ConfigureAwait(false);
            }

            if (pr.GetValue(json))
            {
                WriteJson(console, store, r, graceSpan, dry);
                return 0;
            }

            var verb = dry ? "would forget" : "forgot";
            foreach (var (number, m) in r.Forgotten)
            {
                var started = DateTimeOffset.UnixEpoch.AddTicks(m.StartedWallNs / 100);
                console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"forget: {verb} session {number}  {started:yyyy-MM-ddTHH:mm:ss.fffZ}  {m.Key}  {TimelineRenderer.Printable(m.Command)}"));
            }

            console.Out.WriteLine(Summary(r, graceSpan, dry, store.Counters.Requests));
            console.Out.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>The grace period writers assume and `forget` uses by default: $DIFFKEEPER_FORGET_GRACE, else 1 h.</summary>
    public static TimeSpan GraceFromEnvironment() =>
        Environment.GetEnvironmentVariable(GraceEnv) is { Length: > 0 } text ? Duration(GraceEnv, text) : RemoteLayout.DefaultForgetGrace;

    private static TimeSpan Duration(string name, string text) =>
        TimeSpec.TryParseDuration(text, out var ns)
            ? TimeSpan.FromTicks(ns / 100)
            : throw new DiffKeeperException(ExitCode.Usage, $"{name} takes a duration such as 30d, 1h or 90m, not '{text}'");

    private static string Summary(ForgetResult r, TimeSpan grace, bool dry, long requests)
    {
        var deleted = string.Create(CultureInfo.InvariantCulture,
            $"{r.GenerationsDeleted} older manifest generations, {r.PacksDeleted} packs ({TimelineRenderer.FormatSize(r.PackBytesDeleted)}), {r.IndexesDeleted} indexes, {r.SegmentsDeleted} segments ({TimelineRenderer.FormatSize(r.SegmentBytesDeleted)})");
        var line = string.Create(CultureInfo.InvariantCulture,
            $"forget{(dry ? " --dry-run" : "")}: {r.Forgotten.Count} sessions {(dry ? "would be " : "")}forgotten, {r.SessionsLeft} left; {(dry ? "would delete" : "deleted")} {deleted}; kept {r.ObjectsKept} unnamed objects ({TimelineRenderer.FormatSize(r.BytesKept)}) for the grace period ({Format(grace)})");
        if (r.LiveSessionsKept > 0)
        {
            line += string.Create(CultureInfo.InvariantCulture, $"; kept {r.LiveSessionsKept} keep-mode sessions still being written");
        }

        return line + string.Create(CultureInfo.InvariantCulture, $"; {requests} requests{(dry ? "; nothing was deleted" : "")}");
    }

    private static string Format(TimeSpan t) =>
        t.TotalSeconds < 1 ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalMilliseconds:0.###}ms")
        : t.TotalMinutes < 1 ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalSeconds:0.###}s")
        : t.TotalHours < 1 ? string.Create(CultureInfo.InvariantCulture, $"{t.TotalMinutes:0.##}m")
        : string.Create(CultureInfo.InvariantCulture, $"{t.TotalHours:0.##}h");

    private static void WriteJson(IConsole console, S3ObjectStore store, ForgetResult r, TimeSpan grace, bool dry) => JsonSummary.ToStdout(console, j =>
    {
        j.WriteString("store", store.Name);
        j.WriteBoolean("dry_run", dry);
        j.WriteNumber("grace_seconds", grace.TotalSeconds);
        j.WriteStartArray("forgotten");
        foreach (var (number, m) in r.Forgotten)
        {
            j.WriteStartObject();
            j.WriteNumber("session", number);
            j.WriteString("key", m.Key);
            j.WriteNumber("started_wall_ns", m.StartedWallNs);
            j.WriteString("state", m.State);
            j.WriteString("command", m.Command);
            j.WriteEndObject();
        }

        j.WriteEndArray();
        j.WriteNumber("sessions_left", r.SessionsLeft);
        j.WriteNumber("live_sessions_kept", r.LiveSessionsKept);
        j.WriteNumber("generations_deleted", r.GenerationsDeleted);
        j.WriteNumber("packs_deleted", r.PacksDeleted);
        j.WriteNumber("pack_bytes_deleted", r.PackBytesDeleted);
        j.WriteNumber("indexes_deleted", r.IndexesDeleted);
        j.WriteNumber("segments_deleted", r.SegmentsDeleted);
        j.WriteNumber("segment_bytes_deleted", r.SegmentBytesDeleted);
        j.WriteNumber("objects_kept", r.ObjectsKept);
        j.WriteNumber("bytes_kept", r.BytesKept);
        j.WriteNumber("requests", store.Counters.Requests);
    });
}
