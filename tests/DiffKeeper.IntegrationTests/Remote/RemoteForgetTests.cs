using System.Text.Json;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// `forget` on a remote store (issue 16, docs/store-format.md "Deleting") against a real S3 server (s3rver): sessions
/// forgotten leave `sessions` and the rest still export exactly; objects no manifest names are kept while younger
/// than the grace and deleted once older; and a writer racing a forget never publishes a session that names a
/// deleted object. s3rver's LastModified is the object file's mtime, so "an hour later" is the files backdated.
/// </summary>
public sealed class RemoteForgetTests : IDisposable
{
    private readonly TempDir _tmp = new();

    [Fact]
    public void ForgottenSessionsLeaveAndTheirObjectsGoOnceOlderThanTheGrace()
    {
        var s3Dir = _tmp.Sub("s3");
        using var server = S3rverProcess.Start(s3Dir);
        var url = $"s3://{S3rverProcess.Bucket}/forget";
        var env = server.Environment(_tmp.Sub("cache"));
        var sources = Sources();
        var trees = new Dictionary<int, SortedDictionary<string, Entry>>();
        for (var n = 1; n <= 3; n++)
        {
            trees[n] = Record(env, url, sources, _tmp.Sub($"work-{n}"), "shared.bin", $"only-{n}.bin");
        }

        var packBytes = PackBytes(s3Dir);

        // A dry run says what it would do and deletes nothing.
        var dry = Json(Run(env, "forget", "--trace", url, "--session", "2", "--dry-run", "--json"));
        Assert.True(dry.GetProperty("dry_run").GetBoolean());
        Assert.Equal(2, Assert.Single(dry.GetProperty("forgotten").EnumerateArray()).GetProperty("session").GetInt64());
        Assert.Equal(3, Run(env, "sessions", "--trace", url).Lines.Length);

        // Session 2 leaves the listing at once; its pack, index and segment stay for the grace (1 h): they are young,
        // and its forgotten/ marker names them.
        var first = Run(env, "forget", "--trace", url, "--session", "2");
        Assert.Contains("forgot session 2", first.Stdout, StringComparison.Ordinal);
        Assert.Contains("1 sessions forgotten, 2 left", first.Stdout, StringComparison.Ordinal);
        Assert.Contains("kept 3 unnamed objects", first.Stdout, StringComparison.Ordinal);
        Assert.Equal(2, Run(env, "sessions", "--trace", url).Lines.Length);
        Assert.Equal(packBytes, PackBytes(s3Dir));

        // An hour later they go, with the marker; what the other sessions name stays.
        Backdate(s3Dir, TimeSpan.FromHours(2));
        Assert.Single(Directory.EnumerateFiles(s3Dir, "*._S3rver_object", SearchOption.AllDirectories), f => f.Contains("/forgotten/", StringComparison.Ordinal));
        var sweep = Json(Run(env, "forget", "--trace", url, "--json"));
        Assert.Equal((1, 1, 1, 0), (sweep.GetProperty("packs_deleted").GetInt32(), sweep.GetProperty("indexes_deleted").GetInt32(),
            sweep.GetProperty("segments_deleted").GetInt32(), sweep.GetProperty("objects_kept").GetInt32()));
        Assert.DoesNotContain(Directory.EnumerateFiles(s3Dir, "*._S3rver_object", SearchOption.AllDirectories), f => f.Contains("/forgotten/", StringComparison.Ordinal));
        Assert.True(PackBytes(s3Dir) < packBytes - (200 << 10), $"pack bytes {packBytes} -> {PackBytes(s3Dir)}: session 2's 256 KiB of its own should be gone");
        AssertExports(server, url, trees[1], trees[3]);

        // --keep-last 1 with a zero grace: session 1 goes with what only it names; the pack holding the file session 3 shares stays.
        var keep = Json(Run(env, "forget", "--trace", url, "--keep-last", "1", "--grace", "0", "--json"));
        Assert.Equal(1, Assert.Single(keep.GetProperty("forgotten").EnumerateArray()).GetProperty("session").GetInt64());
        Assert.Equal(1, keep.GetProperty("sessions_left").GetInt32());
        AssertExports(server, url, trees[3]);
    }

    /// <summary>
    /// A keep-mode session publishes a generation per cut. Its older generations stay while the newest is younger than
    /// the grace (a writer may have relied on what only they name), and go once it is older; restore still brings
    /// back the last state.
    /// </summary>
    [Fact]
    public void OlderGenerationsOfAKeptSessionGoOnceTheNewestIsOlderThanTheGrace()
    {
        var s3Dir = _tmp.Sub("s3");
        using var server = S3rverProcess.Start(s3Dir);
        var url = $"s3://{S3rverProcess.Bucket}/keep";
        var env = server.Environment(_tmp.Sub("cache"));
        var state = _tmp.Sub("state");
        Directory.CreateDirectory(state);
        var run = Run(env, "run", "-q", "--state-dir", state, "--store", url, "--upload-interval", "200ms", "--metrics-addr", "none", "--",
            "bash", "-c", $"cd {state} && for i in $(seq 1 8); do head -c 65536 /dev/urandom > f$i; sleep 0.2; done");
        Assert.True(run.ExitCode == 0, run.ToString());
        var expected = TreeSnapshot.Take(state);
        int Generations() => Directory.EnumerateFiles(s3Dir, "*.json._S3rver_object", SearchOption.AllDirectories).Count(f => f.Contains("/sessions/", StringComparison.Ordinal));
        var before = Generations();
        Assert.True(before >= 2, $"the run published {before} generations; the test needs several");

        Assert.Equal(0, Json(Run(env, "forget", "--trace", url, "--json")).GetProperty("generations_deleted").GetInt32());
        Backdate(s3Dir, TimeSpan.FromHours(2));
        var sweep = Json(Run(env, "forget", "--trace", url, "--json"));
        Assert.Equal(before - 1, sweep.GetProperty("generations_deleted").GetInt32());
        Assert.Equal(1, Generations());

        var restored = _tmp.Sub("restored");
        Directory.CreateDirectory(restored);
        var restore = Run(server.Environment(_tmp.Sub("cache-restore")), "restore", "--state-dir", restored, "--store", url);
        Assert.True(restore.ExitCode == 0, restore.ToString());
        TreeSnapshot.AssertSame(expected, TreeSnapshot.Take(restored), "restored after the older generations were forgotten");
    }

    /// <summary>
    /// The race the grace period exists for, made deterministic: a writer has uploaded its blobs (some new, some
    /// found in the bucket) and its segment, and before its manifest a `forget --grace 0` deletes the session the
    /// writer shares blobs with and every object no manifest names. A writer that lists index/ again before its
    /// manifest (its listing is older than half the grace it assumes) uploads them again; one that assumes a longer
    /// grace than forget used publishes a session naming deleted objects, which is why writers must be told.
    /// </summary>
    [Fact]
    public async Task AWriterRacingAForgetNeverPublishesASessionNamingADeletedObject()
    {
        var (server, env, treeB) = TwoTraces(_tmp.Sub("s3"));
        using var disposeServer = server;

        async Task<(UploadResult Result, IObjectStore Store)> Race(string prefix, TimeSpan writerGrace)
        {
            var url = $"s3://{S3rverProcess.Bucket}/{prefix}";
            var push = Run(env, "push", _tmp.Sub("trace-a"), url);
            Assert.True(push.ExitCode == 0, push.ToString());
            using var store = S3ObjectStore.FromEnvironment(S3Location.Parse(url));
            var racing = new ForgetAfterSegment(store, () =>
            {
                var forget = Run(env, "forget", "--trace", url, "--session", "1", "--grace", "0");
                Assert.True(forget.ExitCode == 0, forget.ToString());
                Assert.Contains("deleted 0 older manifest generations, 2 packs", forget.Stdout, StringComparison.Ordinal); // A's and B's new one
            });
            var uploader = new SessionUploader(racing, _tmp.Sub("uploader-cache-" + prefix)) { ForgetGrace = writerGrace };
            var result = await uploader.UploadAsync(_tmp.Sub("trace-b"), 1, publish: true, CancellationToken.None);
            Assert.True(racing.Forgot, "the forget did not run between the segment and the manifest");
            return (result, store);
        }

        // The writer re-checks (it assumes forget's grace, 0) and uploads again what the forget deleted.
        var (safe, _) = await Race("safe", TimeSpan.Zero);
        Assert.True(safe.Published);
        Assert.True(safe.NewPackBytes >= 3 * (256 << 10), $"the writer uploaded {safe.NewPackBytes} pack bytes: its own file, then it and the shared one again");
        var url = $"s3://{S3rverProcess.Bucket}/safe";
        Assert.Single(Run(env, "sessions", "--trace", url).Lines);
        AssertNamedObjectsExist(url);
        AssertExports(server, url, treeB);

        // A writer that assumes the default grace (1 h) does not look again before its manifest, so its first
        // generation names deleted objects; after the manifest it finds the forget's marker dated after its listing,
        // looks again and publishes a second generation that names only objects in the bucket.
        var (late, _) = await Race("late", TimeSpan.FromHours(1));
        Assert.Equal(2, late.Generation);
        AssertNamedObjectsExist($"s3://{S3rverProcess.Bucket}/late");
        AssertExports(server, $"s3://{S3rverProcess.Bucket}/late", treeB);
    }

    /// <summary>
    /// The first race the grace period alone does not cover (docs/store-format.md, "Deleting"), made deterministic:
    /// a pack of an upload that never published (no session names it) is older than the grace; a writer finds it in
    /// the bucket and reuses it; a `forget` with the same (default) grace deletes it between the writer's segment and
    /// its manifest. The writer sees the forget's run marker after its manifest, looks again and repairs.
    /// </summary>
    [Fact]
    public async Task AnOldUnnamedPackAWriterReusesIsUploadedAgainWhenAForgetDeletesIt()
    {
        var s3Dir = _tmp.Sub("s3");
        var (server, env, treeB) = TwoTraces(s3Dir);
        using var disposeServer = server;
        var url = $"s3://{S3rverProcess.Bucket}/unnamed";
        using var store = S3ObjectStore.FromEnvironment(S3Location.Parse(url));

        // An upload that died before its manifest: its packs are in the bucket, named by nothing, and an hour old.
        var interrupted = await new SessionUploader(store, _tmp.Sub("uploader-cache-a")).UploadAsync(_tmp.Sub("trace-a"), 1, publish: false, CancellationToken.None);
        Assert.True(interrupted.NewPackBytes > 0);
        Backdate(s3Dir, TimeSpan.FromHours(2));
        var unnamed = (await store.ListAsync(RemoteLayout.PacksPrefix, TestContext.Current.CancellationToken)).Select(o => o.Key).ToList();

        var racing = new ForgetAfterSegment(store, () =>
        {
            var forget = Run(env, "forget", "--trace", url);
            Assert.True(forget.ExitCode == 0, forget.ToString());
            Assert.Contains($"{unnamed.Count} packs", forget.Stdout, StringComparison.Ordinal);
        });
        var result = await new SessionUploader(racing, _tmp.Sub("uploader-cache-b")).UploadAsync(_tmp.Sub("trace-b"), 1, publish: true, CancellationToken.None);
        Assert.True(racing.Forgot, "the forget did not run between the segment and the manifest");
        Assert.True(result.ReusedBlobs > 0, "the writer reused nothing of the unnamed pack");
        Assert.Equal(2, result.Generation);
        var first = await FirstGenerationAsync(store, result.Key);
        Assert.Contains(first.Packs, p => unnamed.Contains(RemoteLayout.Pack(p)));
        AssertNamedObjectsExist(url);
        AssertExports(server, url, treeB);
    }

    /// <summary>
    /// The second race, made deterministic: a `forget --grace 0` lists the bucket, then waits before its first
    /// deletion; meanwhile a writer (told the same grace, so it looks again right before its manifest) reuses a pack
    /// of the session being forgotten and publishes; then the forget deletes that pack. The writer, finding the
    /// forget's lease live after its manifest, waits for it to end, looks again and repairs.
    /// </summary>
    [Fact]
    public async Task AForgetThatListedBeforeAManifestAndDeletesAfterItsCheckIsRepairedAfter()
    {
        var (server, env, treeB) = TwoTraces(_tmp.Sub("s3"));
        using var disposeServer = server;
        var url = $"s3://{S3rverProcess.Bucket}/listed";
        var push = Run(env, "push", _tmp.Sub("trace-a"), url);
        Assert.True(push.ExitCode == 0, push.ToString());
        using var store = S3ObjectStore.FromEnvironment(S3Location.Parse(url));
        var packsOfA = (await store.ListAsync(RemoteLayout.PacksPrefix, TestContext.Current.CancellationToken)).Select(o => o.Key).ToList();

        var listed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var published = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var forgetStore = new Hooked(store, onDelete: async key =>
        {
            if (!key.StartsWith(RemoteLayout.SessionsPrefix, StringComparison.Ordinal))
            {
                listed.TrySetResult();
                await published.Task;
            }
        });
        var forget = Task.Run(() => new RemoteForget(forgetStore, _tmp.Sub("forget-cache"), TimeProvider.System)
            .RunAsync(new ForgetSelection([1], null, null), TimeSpan.Zero, dryRun: false, null, CancellationToken.None), TestContext.Current.CancellationToken);
        await listed.Task.WaitAsync(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken);

        var writerStore = new Hooked(store, onPut: key =>
        {
            if (key.StartsWith(RemoteLayout.SessionsPrefix, StringComparison.Ordinal))
            {
                published.TrySetResult();
            }
        });
        var uploader = new SessionUploader(writerStore, _tmp.Sub("uploader-cache")) { ForgetGrace = TimeSpan.Zero, ForgetPoll = TimeSpan.FromMilliseconds(100) };
        var result = await uploader.UploadAsync(_tmp.Sub("trace-b"), 1, publish: true, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(2), TestContext.Current.CancellationToken);
        var forgot = await forget.WaitAsync(TimeSpan.FromMinutes(1), TestContext.Current.CancellationToken);
        Assert.Single(forgot.Forgotten);
        Assert.True(forgot.PacksDeleted >= 1, $"the forget deleted {forgot.PacksDeleted} packs");

        Assert.Equal(2, result.Generation);
        var first = await FirstGenerationAsync(store, result.Key);
        Assert.Contains(first.Packs, p => packsOfA.Contains(RemoteLayout.Pack(p)));
        Assert.DoesNotContain(await store.ListAsync(RemoteLayout.ForgettingPrefix, TestContext.Current.CancellationToken), o => o.Key.EndsWith(".running", StringComparison.Ordinal));
        Assert.Single(Run(env, "sessions", "--trace", url).Lines);
        AssertNamedObjectsExist(url);
        AssertExports(server, url, treeB);
    }

    /// <summary>A server and two local traces, A (shared.bin, only-1.bin) and B (shared.bin, only-2.bin); B's tree.</summary>
    private (S3rverProcess Server, Dictionary<string, string> Env, SortedDictionary<string, Entry> TreeB) TwoTraces(string s3Dir)
    {
        var server = S3rverProcess.Start(s3Dir);
        try
        {
            var env = server.Environment(_tmp.Sub("cache"));
            SetAwsEnvironment(env);
            var sources = Sources();
            Record(env, _tmp.Sub("trace-a"), sources, _tmp.Sub("work-a"), "shared.bin", "only-1.bin");
            return (server, env, Record(env, _tmp.Sub("trace-b"), sources, _tmp.Sub("work-b"), "shared.bin", "only-2.bin"));
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    private static async Task<SessionManifest> FirstGenerationAsync(IObjectStore store, string key) =>
        SessionManifest.Parse(RemoteLayout.Manifest(key, 1), (await store.GetAsync(RemoteLayout.Manifest(key, 1), cancel: TestContext.Current.CancellationToken))!);

    private static void SetAwsEnvironment(Dictionary<string, string> env)
    {
        foreach (var (k, v) in env.Where(e => e.Key.StartsWith("AWS_", StringComparison.Ordinal)))
        {
            System.Environment.SetEnvironmentVariable(k, v); // for the uploader in this process (every S3 test passes its own to its processes)
        }
    }

    /// <summary>Every object the newest manifest of every session names is in the bucket.</summary>
    private void AssertNamedObjectsExist(string url)
    {
        using var store = S3ObjectStore.FromEnvironment(S3Location.Parse(url));
        var keys = new HashSet<string>(store.ListAsync("").GetAwaiter().GetResult().Select(o => o.Key), StringComparer.Ordinal);
        var sessions = new RemoteTrace(store, _tmp.Sub("check-cache")).SessionsAsync(CancellationToken.None).GetAwaiter().GetResult();
        Assert.NotEmpty(sessions);
        foreach (var m in sessions)
        {
            Assert.Contains(RemoteLayout.Segment(m.Segment), keys);
            foreach (var p in m.Packs)
            {
                Assert.Contains(RemoteLayout.Pack(p), keys);
                Assert.Contains(RemoteLayout.Index(p), keys);
            }
        }
    }

    /// <summary>Sessions 1, 2, … of <paramref name="url"/> export exactly <paramref name="trees"/>, through a fresh cache.</summary>
    private void AssertExports(S3rverProcess server, string url, params SortedDictionary<string, Entry>[] trees)
    {
        var env = server.Environment(_tmp.Sub("cache-reader-" + Guid.NewGuid().ToString("N")[..6]));
        Assert.Equal(trees.Length, Run(env, "sessions", "--trace", url).Lines.Length);
        for (var n = 1; n <= trees.Length; n++)
        {
            var out1 = _tmp.Sub("out-" + Guid.NewGuid().ToString("N")[..6]);
            var export = Run(env, "export", "--trace", url, "--session", n.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", out1);
            Assert.True(export.ExitCode == 0, export.ToString());
            TreeSnapshot.AssertSame(trees[n - 1], TreeSnapshot.Take(out1), $"session {n} of {url}");
        }
    }

    /// <summary>256 KiB of fixed random bytes per file: one shared by every session, one of each session's own.</summary>
    private string Sources()
    {
        var dir = _tmp.Sub("sources");
        Directory.CreateDirectory(dir);
        foreach (var (name, seed) in new[] { ("shared.bin", 10), ("only-1.bin", 11), ("only-2.bin", 12), ("only-3.bin", 13) })
        {
            var data = new byte[256 << 10];
            new Random(seed).NextBytes(data);
            File.WriteAllBytes(Path.Combine(dir, name), data);
        }

        return dir;
    }

    /// <summary>Records copying <paramref name="files"/> into <paramref name="work"/> into <paramref name="trace"/> (a directory or s3://…).</summary>
    private static SortedDictionary<string, Entry> Record(Dictionary<string, string> env, string trace, string sources, string work, params string[] files)
    {
        Directory.CreateDirectory(work);
        var copy = string.Join("; ", files.Select(f => $"cp {Path.Combine(sources, f)} {f}"));
        var r = RemoteStoreTests.Run(env, work, "record", "-q", "--trace", trace, "--", "bash", "-c", copy);
        Assert.True(r.ExitCode == 0, r.ToString());
        return TreeSnapshot.Take(work);
    }

    private static long PackBytes(string s3Dir) =>
        Directory.EnumerateFiles(s3Dir, "*.pack._S3rver_object", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

    private static void Backdate(string s3Dir, TimeSpan by)
    {
        foreach (var f in Directory.EnumerateFiles(s3Dir, "*._S3rver_object", SearchOption.AllDirectories))
        {
            File.SetLastWriteTimeUtc(f, File.GetLastWriteTimeUtc(f) - by);
        }
    }

    private static JsonElement Json(Cli.Result r)
    {
        Assert.True(r.ExitCode == 0, r.ToString());
        return JsonDocument.Parse(Assert.Single(r.Lines)).RootElement.Clone();
    }

    private Cli.Result Run(Dictionary<string, string> env, params string[] args) => RemoteStoreTests.Run(env, _tmp.Path, args);

    public void Dispose() => _tmp.Dispose();

    /// <summary>The real store, with a `forget` run right after the first segment is written: between an upload and its manifest.</summary>
    private sealed class ForgetAfterSegment(IObjectStore inner, Action forget) : IObjectStore
    {
        public bool Forgot { get; private set; }

        public RequestCounters Counters => inner.Counters;

        public string Name => inner.Name;

        public Task<byte[]?> GetAsync(string key, long offset = 0, long length = -1, CancellationToken cancel = default) => inner.GetAsync(key, offset, length, cancel);

        public async Task<bool> PutAsync(string key, ReadOnlyMemory<byte> body, bool createOnly, CancellationToken cancel = default)
        {
            var put = await inner.PutAsync(key, body, createOnly, cancel);
            if (!Forgot && key.StartsWith(RemoteLayout.SegmentsPrefix, StringComparison.Ordinal))
            {
                Forgot = true;
                forget();
            }

            return put;
        }

        public Task<List<ObjectInfo>> ListAsync(string prefix, CancellationToken cancel = default) => inner.ListAsync(prefix, cancel);

        public Task DeleteAsync(string key, CancellationToken cancel = default) => inner.DeleteAsync(key, cancel);
    }

    /// <summary>A store that runs a hook before each delete and after each put (the interleavings of the race tests).</summary>
    private sealed class Hooked(IObjectStore inner, Func<string, Task>? onDelete = null, Action<string>? onPut = null) : IObjectStore
    {
        public RequestCounters Counters => inner.Counters;

        public string Name => inner.Name;

        public Task<byte[]?> GetAsync(string key, long offset = 0, long length = -1, CancellationToken cancel = default) => inner.GetAsync(key, offset, length, cancel);

        public async Task<bool> PutAsync(string key, ReadOnlyMemory<byte> body, bool createOnly, CancellationToken cancel = default)
        {
            var put = await inner.PutAsync(key, body, createOnly, cancel);
            onPut?.Invoke(key);
            return put;
        }

        public Task<List<ObjectInfo>> ListAsync(string prefix, CancellationToken cancel = default) => inner.ListAsync(prefix, cancel);

        public async Task DeleteAsync(string key, CancellationToken cancel = default)
        {
            if (onDelete is not null)
            {
                await onDelete(key);
            }

            await inner.DeleteAsync(key, cancel);
        }
    }
}
