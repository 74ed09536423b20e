using System.Globalization;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Remote;

/// <summary>
/// Runs a command whose trace or store is <c>s3://…</c>: readers (timeline, log, show, export, ls, diff, stats,
/// verify) run on the session's cache trace, fetched first; <c>sessions</c> lists the remote manifests; <c>record</c>
/// records into a local trace in the cache, uploads as it goes and at the end. Everything else runs as given.
/// </summary>
internal static class RemoteInvocation
{
    private static readonly string[] TraceNames = ["--trace", "--state-dir"];
    private static readonly HashSet<string> Readers = ["timeline", "log", "show", "export", "ls", "diff", "stats", "verify", "sessions"];
    private static readonly HashSet<string> NeedContent = ["show", "export", "diff", "verify"];

    /// <summary>The remote address the command line works on, or null when it names none.</summary>
    public static S3Location? Target(string[] args)
    {
        var a = new RemoteArguments(args);
        if (a.Command is not { } command || args.Contains("--help") || args.Contains("-h"))
        {
            return null;
        }

        if (Readers.Contains(command) || command == "record")
        {
            var trace = a.Value(TraceNames) ?? Environment.GetEnvironmentVariable(Commands.CommonOptions.TraceEnv);
            return S3Location.IsRemote(trace) ? S3Location.Parse(trace!) : null;
        }

        return command is "run" or "restore" && a.Value("--store") is { } store && S3Location.IsRemote(store) ? S3Location.Parse(store) : null;
    }

    public static async Task<int> RunAsync(string[] args, S3Location location, IConsole console, Func<string[], Task<int>> runLocal)
    {
        try
        {
            return await RunRemoteAsync(args, location, console, runLocal).ConfigureAwait(false);
        }
        finally
        {
            console.Out.Flush();
        }
    }

    private static async Task<int> RunRemoteAsync(string[] args, S3Location location, IConsole console, Func<string[], Task<int>> runLocal)
    {
        var a = new RemoteArguments(args);
        using var store = S3ObjectStore.FromEnvironment(location);
        using var report = Environment.GetEnvironmentVariable("DIFFKEEPER_S3_STATS") == "1" ? new CountersReport(store, console) : null;
        var cacheRoot = RemoteCache.Root();
        if (a.Command == "record")
        {
            return await RecordAsync(a, store, cacheRoot, console, runLocal).ConfigureAwait(false);
        }

        if (a.Command is "run" or "restore")
        {
            return await RemoteKeepStore.RunAsync(a, store, cacheRoot, console, runLocal).ConfigureAwait(false);
        }

        var remote = new RemoteTrace(store, cacheRoot);
        if (a.Command == "sessions")
        {
            var sessions = await remote.SessionsAsync(CancellationToken.None).ConfigureAwait(false);
            for (var i = 0; i < sessions.Count; i++)
            {
                var s = sessions[i];
                var started = DateTimeOffset.UnixEpoch.AddTicks(s.StartedWallNs / 100);
                var status = s.State == "finished" && s.ExitCode is { } code ? $"exit {code}" : s.State;
                console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{i + 1,4}  {started:yyyy-MM-ddTHH:mm:ss.fffZ}  {s.Capture,-8} {s.Events,7} events  {status,-20}  {TimelineRenderer.Printable(s.Command)}"));
            }

            return 0;
        }

        if (a.Value("--against") is not null)
        {
            throw new DiffKeeperException(ExitCode.Usage, "diff --against compares two sessions of one local trace; pull each remote session first ('diffkeeper pull')");
        }

        long? number = null;
        if (a.Value("--session") is { } text)
        {
            number = long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n
                : throw new DiffKeeperException(ExitCode.Usage, $"--session '{text}' is not a session number");
        }

        var manifest = await remote.SessionAsync(number, CancellationToken.None).ConfigureAwait(false);
        var dir = await remote.OpenAsync(manifest, NeedContent.Contains(a.Command!), CancellationToken.None).ConfigureAwait(false);
        a.Set(TraceNames, dir);
        if (number is not null)
        {
            a.Set(["--session"], "1");
        }

        return await runLocal(a.ToArray()).ConfigureAwait(false);
    }

    /// <summary>
    /// `record --trace s3://…`: records into a fresh local trace under the cache, uploads the blobs recorded so far
    /// every <see cref="UploadInterval"/> while the command runs, and the session at the end (retrying for up to
    /// DIFFKEEPER_UPLOAD_RETRY_SECONDS, default 60). The local trace is deleted once the session is published; when
    /// the upload fails it is kept and named, `diffkeeper push` finishes it, and the exit code is the command's when
    /// it failed, else 10.
    /// </summary>
    private static async Task<int> RecordAsync(RemoteArguments a, IObjectStore store, string cacheRoot, IConsole console, Func<string[], Task<int>> runLocal)
    {
        var local = Path.Combine(cacheRoot, RemoteLayout.CacheName(store.Name), "record",
            $"{DateTime.UtcNow:yyyyMMddTHHmmss}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}");
        a.Set(TraceNames, local);
        var storeCache = Path.Combine(cacheRoot, RemoteLayout.CacheName(store.Name));
        var uploader = new SessionUploader(store, storeCache) { ForgetGrace = Commands.ForgetCommand.GraceFromEnvironment() };
        // Uploads as it goes are an optimization: the final upload retries and reports.
        var code = await PeriodicUpload.AroundAsync(() => runLocal(a.ToArray()), UploadInterval, async cancel =>
        {
            if (File.Exists(Path.Combine(local, "catalog.db")) && HasSession(local))
            {
                await uploader.UploadAsync(local, 1, publish: false, cancel).ConfigureAwait(false);
            }
        }, failed: null).ConfigureAwait(false);

        if (!File.Exists(Path.Combine(local, "catalog.db")) || !HasSession(local))
        {
            return code; // nothing was recorded (a usage error, a command that could not start)
        }

        var deadline = DateTime.UtcNow + RetryFor;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                var result = await uploader.UploadAsync(local, 1, publish: true, CancellationToken.None).ConfigureAwait(false);
                Directory.Delete(local, recursive: true);
                if (!Quiet(a))
                {
                    console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"diffkeeper: uploaded to {store.Name}: session {result.Key}, {result.NewBlobs} new blobs ({result.NewPackBytes} bytes), {result.ReusedBlobs} already there; {store.Counters}"));
                }

                return code;
            }
            catch (DiffKeeperException e) when (e.Code == ExitCode.SystemError && DateTime.UtcNow < deadline)
            {
                console.Error.WriteLine($"diffkeeper: upload to {store.Name} failed ({e.Message}); retrying");
                await Task.Delay(TimeSpan.FromSeconds(Math.Min(10, attempt))).ConfigureAwait(false);
            }
            catch (DiffKeeperException e)
            {
                console.Error.WriteLine($"diffkeeper: upload to {store.Name} failed: {e.Message}; the trace is complete at {local}; 'diffkeeper push {local} {store.Name}' finishes the upload");
                return code != 0 ? code : (int)ExitCode.SystemError;
            }
        }
    }

    /// <summary>DIFFKEEPER_S3_STATS=1: the requests and bytes of the command on stderr at its end (benchmarks).</summary>
    private sealed class CountersReport(IObjectStore store, IConsole console) : IDisposable
    {
        public void Dispose() => console.Error.WriteLine($"diffkeeper: s3: {store.Counters}");
    }

    private static bool Quiet(RemoteArguments a) => a.Has("-q") || a.Has("--quiet");

    private static bool HasSession(string trace)
    {
        try
        {
            using var reader = TraceReader.Open(trace);
            return reader.Sessions().Any(s => s.Id == 1 && s.StartedWallNs != 0);
        }
        catch (DiffKeeperException)
        {
            return false;
        }
    }

    internal static TimeSpan UploadInterval => Seconds("DIFFKEEPER_UPLOAD_INTERVAL_SECONDS", 10);

    private static TimeSpan RetryFor => Seconds("DIFFKEEPER_UPLOAD_RETRY_SECONDS", 60);

    internal static TimeSpan Seconds(string name, double fallback) =>
        TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable(name), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s >= 0 ? s : fallback);
}
