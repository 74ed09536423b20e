using System.Globalization;
using DiffKeeper.Cli.Commands;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Remote;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Remote;

/// <summary>
/// Keep mode with the store in a bucket (`run --store s3://…`, `restore --store s3://…`): the agent records into a
/// local store in the cache (on the pod's emptyDir), made from the bucket's latest session when missing, and every
/// `--upload-interval` publishes the running session as a new manifest generation (a consistent cut: the last
/// commit); at the end once more. A restart on the same node finds the local store and uses it (it holds at least
/// what was uploaded); a new pod restores from the bucket, losing at most the changes of the last upload interval.
/// </summary>
internal static class RemoteKeepStore
{
    /// <summary>
    /// The default upload interval. A cut costs about 6 requests (LIST index/, PUT pack, index, segment, manifest,
    /// LIST forgetting/); at S3 Standard's $0.005 per 1,000 PUT or LIST that is about $7.80 a month per pod at 10 s,
    /// $78 at 1 s (Litestream's one-second default cost one user ~$100), $1.30 at 60 s. An idle app uploads nothing.
    /// </summary>
    public static readonly TimeSpan DefaultUploadInterval = TimeSpan.FromSeconds(10);

    private const string UploadedFile = "uploaded-sessions";

    public static async Task<int> RunAsync(RemoteArguments a, IObjectStore store, string cacheRoot, IConsole console, Func<string[], Task<int>> runLocal)
    {
        var interval = DefaultUploadInterval;
        if (a.Remove("--upload-interval") is { } text)
        {
            interval = TimeSpec.TryParseDuration(text, out var ns) && ns >= 10_000_000 && ns <= 86_400_000_000_000
                ? TimeSpan.FromTicks(ns / 100)
                : throw new DiffKeeperException(ExitCode.Usage, $"--upload-interval '{text}' is not a duration from 10ms to 24h (for example 10s, 1m)");
        }

        var storeCache = Path.Combine(cacheRoot, RemoteLayout.CacheName(store.Name));
        var local = Path.Combine(storeCache, "keep");
        if (!File.Exists(Path.Combine(local, "catalog.db")))
        {
            await BootstrapAsync(store, cacheRoot, local, console).ConfigureAwait(false);
        }

        a.Set(["--store"], local);
        if (a.Command == "restore")
        {
            return await runLocal(a.ToArray()).ConfigureAwait(false);
        }

        var uploader = new SessionUploader(store, storeCache) { ForgetGrace = Commands.ForgetCommand.GraceFromEnvironment() };
        await UploadEarlierSessionsAsync(uploader, local, console).ConfigureAwait(false);
        var state = new CutState();
        var code = await PeriodicUpload.AroundAsync(() => runLocal(a.ToArray()), interval,
            cancel => UploadCutAsync(uploader, local, state, cancel),
            e => console.Error.WriteLine($"diffkeeper: upload to {store.Name} failed ({e.Message}); retrying in {interval.TotalSeconds:0.###} s")).ConfigureAwait(false);

        try
        {
            await UploadCutAsync(uploader, local, state, CancellationToken.None).ConfigureAwait(false);
            if (state.Session != 0)
            {
                MarkUploaded(local, state.Session); // its last cut is in the bucket; a restart need not send it again
            }
        }
        catch (DiffKeeperException e)
        {
            console.Error.WriteLine($"diffkeeper: the last upload to {store.Name} failed: {e.Message}; the store at {local} keeps it for the next run on this node");
            return code != 0 ? code : (int)ExitCode.SystemError;
        }

        return code;
    }

    /// <summary>Makes the local store from the bucket's latest session (nothing when the bucket has none).</summary>
    private static async Task BootstrapAsync(IObjectStore store, string cacheRoot, string local, IConsole console)
    {
        var remote = new RemoteTrace(store, cacheRoot);
        var sessions = await remote.SessionsAsync(CancellationToken.None).ConfigureAwait(false);
        if (sessions.LastOrDefault(s => s.StartedWallNs != 0 && s.Roots.Count == 1) is not { } latest)
        {
            return;
        }

        var cached = await remote.OpenAsync(latest, content: true, CancellationToken.None).ConfigureAwait(false);
        if (Directory.Exists(local))
        {
            Directory.Delete(local, recursive: true);
        }

        Directory.CreateDirectory(Path.GetDirectoryName(local)!);
        PullCommand.CopyTrace(cached, local);
        File.WriteAllText(Path.Combine(local, UploadedFile), "1\n"); // session 1 came from the bucket
        console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"diffkeeper: fetched session {latest.Key} (generation {latest.Generation}) from {store.Name}: {store.Counters}"));
    }

    /// <summary>Sessions of the local store that ended (or died) before their last cut reached the bucket.</summary>
    private static async Task UploadEarlierSessionsAsync(SessionUploader uploader, string local, IConsole console)
    {
        if (!File.Exists(Path.Combine(local, "catalog.db")))
        {
            return;
        }

        var done = Uploaded(local);
        List<long> pending;
        using (var reader = TraceReader.Open(local))
        {
            pending = [.. reader.Sessions().Where(s => s.StartedWallNs != 0 && !done.Contains(s.Id)).Select(s => s.Id)];
        }

        foreach (var id in pending)
        {
            try
            {
                await uploader.UploadAsync(local, id, publish: true, CancellationToken.None).ConfigureAwait(false);
                MarkUploaded(local, id);
            }
            catch (DiffKeeperException e)
            {
                console.Error.WriteLine($"diffkeeper: session {id} of {local} is not uploaded yet ({e.Message}); the next run tries again");
            }
        }
    }

    private sealed class CutState
    {
        public long Session;
        public string? Last;
    }

    /// <summary>Publishes the running session when anything was committed since the last cut.</summary>
    private static async Task UploadCutAsync(SessionUploader uploader, string local, CutState state, CancellationToken cancel)
    {
        string marker;
        using (var reader = TraceReader.Open(local))
        {
            var current = reader.Sessions().LastOrDefault(s => s.StartedWallNs != 0);
            if (current is null)
            {
                return;
            }

            state.Session = current.Id;
            marker = string.Create(CultureInfo.InvariantCulture, $"{current.Id}:{reader.MaxSeq(current)}:{current.State}:{reader.AllBlobs().Count()}");
        }

        if (marker == state.Last)
        {
            return;
        }

        await uploader.UploadAsync(local, state.Session, publish: true, cancel).ConfigureAwait(false);
        state.Last = marker;
    }

    private static HashSet<long> Uploaded(string local) =>
        File.Exists(Path.Combine(local, UploadedFile))
            ? [.. File.ReadAllLines(Path.Combine(local, UploadedFile)).Select(l => long.TryParse(l, CultureInfo.InvariantCulture, out var v) ? v : -1)]
            : [];

    private static void MarkUploaded(string local, long id)
    {
        if (!Uploaded(local).Contains(id))
        {
            File.AppendAllText(Path.Combine(local, UploadedFile), id.ToString(CultureInfo.InvariantCulture) + "\n");
        }
    }
}
