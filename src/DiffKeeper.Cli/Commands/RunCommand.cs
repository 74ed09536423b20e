using System.CommandLine;
using DiffKeeper.Cli.Metrics;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Recording.Agent;
using DiffKeeper.Replay;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class RunCommand
{
    public static Command Create(IConsole console)
    {
        var stateDir = KeepCommandOptions.StateDir();
        var store = KeepCommandOptions.Store();
        var onExisting = KeepCommandOptions.OnExisting();
        var flush = new Option<string>("--flush-interval")
        {
            Description = "A change is durable in the store within this time (10ms to 1h; default 100ms)",
            DefaultValueFactory = _ => "100ms",
            HelpName = "DURATION",
        };
        var metrics = new Option<string>("--metrics-addr")
        {
            Description = "Where to serve /metrics (Prometheus text format) and /healthz: :PORT, HOST:PORT, or 'none' (default :9911)",
            DefaultValueFactory = _ => ":9911",
            HelpName = "ADDR",
        };
        var retain = new Option<string?>("--retain")
        {
            Description = "Keep the versions recorded within this long (24h, 7d, 90m); older versions of a path are pruned and their bytes collected " +
                "in the background while the app runs. The newest version of every path is always kept",
            HelpName = "DURATION",
        };
        var maxVersions = new Option<int?>("--max-versions")
        {
            Description = "Keep at most N versions of each path (N >= 1); older ones are pruned and collected in the background. " +
                "With --retain, a version is kept only while both keep it",
            HelpName = "N",
        }.Expecting("a number of versions (1 or more: the newest version of a path is always kept)", n => n >= 1);
        var retentionInterval = new Option<string>("--retention-interval")
        {
            Description = "How often --retain and --max-versions are applied (prune, then gc) while the app runs (100ms to 24h; default 60s)",
            DefaultValueFactory = _ => "60s",
            HelpName = "DURATION",
        };
        var bigFile = BigFileOption.Create();
        var quiet = new Option<bool>("--quiet", "-q") { Description = "Do not print the summary line at the end" };
        var capture = CaptureOption.Create(
            "Capture backend: auto (inotify, as keep mode has always used), ebpf or fanotify (the timeline then shows each change's pid " +
            "and program; a cut drains the ring buffer or queue to empty while the app is stopped), or inotify. A backend asked for " +
            "by name that cannot start here is an error (exit 10), as for 'record'",
            "auto", "ebpf", "fanotify", "inotify");
        var command = new Argument<string[]>("app")
        {
            Description = "The app to run, after '--'",
            Arity = ArgumentArity.OneOrMore,
        };
        var cmd = new Command("run", """
            Keep an app's state directory across kill -9, eviction and restarts with an ephemeral volume: restore the
            latest recorded state (as 'restore' does), start the app, record the directory into the store
            continuously (each run is a new session), forward SIGTERM/SIGINT/SIGHUP/SIGQUIT to the app, reap
            orphaned processes (it is their subreaper), and exit with the app's exit code.
            Only consistent cuts are committed: the app's processes are stopped for the few milliseconds it takes
            to read what changed, so the store always holds a state the directory really had.
            With --retain or --max-versions, older versions are pruned and the store garbage-collected in the
            background (as 'prune' and 'gc' do) without stopping the recording.
            Also accepted without 'run': diffkeeper --state-dir=/data --store=/deltas -- APP
            Example: diffkeeper run --state-dir /data --store /deltas -- redis-server /etc/redis.conf
            """)
        {
            stateDir, store, onExisting, flush, metrics, retain, maxVersions, retentionInterval, bigFile, capture, quiet, command,
        };
        cmd.SetAction(async (pr, ct) =>
        {
            var (state, st) = KeepCommandOptions.Resolve(pr.GetValue(stateDir)!, pr.GetValue(store)!);
            var interval = ParseInterval(pr.GetValue(flush)!);
            var retention = ParseRetention(pr.GetValue(retain), pr.GetValue(maxVersions), pr.GetValue(retentionInterval)!);
            var metricsAddr = pr.GetValue(metrics)!;
            var endpoint = metricsAddr is "none" or "" ? null : MetricsEndpoint.ParseAddress(metricsAddr);
            try
            {
                Directory.CreateDirectory(state);
            }
            catch (Exception e) when (OsError.IsOsFailure(e))
            {
                throw OsError.At(e, "create the state directory", state);
            }

            using var writer = TraceWriter.Open(st);
            var restore = StateRestorer.Restore(st, state, pr.GetValue(onExisting));
            console.Error.WriteLine(KeepCommandOptions.Describe(restore, state, st));
            var counters = new AgentCounters
            {
                RecoverySeconds = restore.Elapsed.TotalSeconds,
                RecoveryFiles = restore.Files,
                RecoveryBytes = restore.Bytes,
            };
            var version = BuildVersion.Informational.Split('+')[0];
            await using var server = endpoint is null ? null
                : MetricsEndpoint.Start(endpoint, () => PrometheusExposition.Render(counters, version, counters.Capture), () => counters.AppRunning);
            if (server is not null)
            {
                console.Error.WriteLine($"diffkeeper: metrics on http://{server.EndPoint}/metrics");
            }

            var options = new KeepOptions(state, st, pr.GetValue(command)!, Directory.GetCurrentDirectory())
            {
                FlushInterval = interval, Retention = retention, BigFileThreshold = pr.GetValue(bigFile), Capture = CaptureOption.Parse(pr.GetValue(capture)!),
            };
            var agent = new KeepAgent(options, writer, counters, console.Error);
            var exit = await agent.RunAsync(ct).ConfigureAwait(false);
            if (!pr.GetValue(quiet))
            {
                console.Error.WriteLine(
                    $"diffkeeper: kept session {agent.SessionId} in {st}: {counters.Cuts} cuts ({counters.FrozenCuts} with the app stopped, {counters.FreezeSeconds * 1000:0} ms in all), " +
                    $"{counters.Versions} versions, {TimelineRenderer.FormatSize(counters.RawBytes)} read, {TimelineRenderer.FormatSize(counters.StoredBytesWritten)} stored" +
                    (counters.VersionsFromWrites > 0 ? $" ({counters.VersionsFromWrites} of big files from their written blocks alone)" : "") +
                    (counters.LostEvents > 0 ? $", {counters.LostEvents} LOST (rescanned)" : ""));
            }

            return exit;
        });
        return cmd;
    }

    private static TimeSpan ParseInterval(string text)
    {
        if (!TimeSpec.TryParse(text, out var spec) || spec.Kind != TimeSpecKind.SinceStart ||
            spec.Value < 10_000_000 || spec.Value > 3_600_000_000_000)
        {
            throw new DiffKeeperException(ExitCode.Usage, $"--flush-interval '{text}' is not a duration from 10ms to 1h (for example 100ms, 1s)");
        }

        return TimeSpan.FromTicks(spec.Value / 100);
    }

    private static RetentionOptions? ParseRetention(string? retain, int? maxVersions, string intervalText)
    {
        TimeSpan? within = null;
        if (retain is not null)
        {
            within = TimeSpec.TryParseDuration(retain, out var ns) && ns > 0
                ? TimeSpan.FromTicks(ns / 100)
                : throw new DiffKeeperException(ExitCode.Usage, $"--retain takes a duration such as 24h, 7d or 90m, not '{retain}'");
        }

        if (maxVersions is < 1)
        {
            throw new DiffKeeperException(ExitCode.Usage, "--max-versions must be at least 1: the newest version of a path is always kept");
        }

        if (!TimeSpec.TryParseDuration(intervalText, out var intervalNs) || intervalNs < 100_000_000 || intervalNs > 86_400_000_000_000)
        {
            throw new DiffKeeperException(ExitCode.Usage, $"--retention-interval '{intervalText}' is not a duration from 100ms to 24h (for example 60s, 10m)");
        }

        return within is null && maxVersions is null ? null : new RetentionOptions(maxVersions, within, TimeSpan.FromTicks(intervalNs / 100));
    }

    /// <summary>The seed's form, `diffkeeper --state-dir=/data --store=/deltas -- APP`, is `run` without its name.</summary>
    public static string[] AcceptSeedForm(string[] args) =>
        args.Length > 0 && (args[0].StartsWith("--state-dir", StringComparison.Ordinal) || args[0].StartsWith("--store", StringComparison.Ordinal))
            ? ["run", .. args]
            : args;
}
