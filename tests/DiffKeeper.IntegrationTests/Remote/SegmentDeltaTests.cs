using System.Text.Json;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// Delta segments (docs/store-format.md, "Remote stores": delta segment) against a real S3 server (s3rver): the cuts
/// of a keep-mode session after its first, and a later session of the same job, upload their catalog as a small
/// delta against a whole segment already in the bucket; both read back exactly with an empty cache; a damaged base
/// is damage (exit 5), never a wrong catalog.
/// </summary>
public sealed class SegmentDeltaTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public async Task Keep_mode_cuts_and_later_sessions_send_their_catalog_as_a_small_delta()
    {
        using var server = S3rverProcess.Start(_tmp.Sub("s3"));
        var env = server.Environment(_tmp.Sub("cache"));
        var bucket = Path.Combine(server.DataDir, S3rverProcess.Bucket);

        // A keep-mode session with a cut every 200 ms while it writes 6 files over ~1.5 s.
        var state = _tmp.Sub("state");
        Directory.CreateDirectory(state);
        var run = RemoteStoreTests.Run(env, _tmp.Path, "run", "-q", "--state-dir", state, "--store", $"s3://{S3rverProcess.Bucket}/keep",
            "--upload-interval", "200ms", "--metrics-addr", "none", "--", "bash", "-c", $"for i in $(seq 1 6); do echo line $i >> '{state}/log'; head -c 3000 /dev/urandom > '{state}/f'$i; sleep 0.25; done");
        Assert.True(run.ExitCode == 0, run.ToString());
        var cuts = Manifests(bucket, "keep");
        Assert.True(cuts.Count >= 3, $"{cuts.Count} generations");
        var whole = cuts.Where(m => m.Base is null).ToList();
        var deltas = cuts.Where(m => m.Base is not null).ToList();
        Assert.NotEmpty(deltas);
        Assert.All(deltas, d =>
        {
            Assert.Equal(3, d.Format);
            Assert.Contains(whole, w => w.Segment == d.Base);
            // Sent only when under half the whole segment it stands for, which is at least its base here (the session only grows).
            Assert.True(d.SegmentSize < whole.Single(w => w.Segment == d.Base).SegmentSize, $"a delta of {d.SegmentSize} bytes");
        });
        var expected = TreeSnapshot.Take(state);
        var restored = _tmp.Sub("restored");
        Directory.CreateDirectory(restored);
        var restore = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-restore")), _tmp.Path, "restore", "--state-dir", restored, "--store", $"s3://{S3rverProcess.Bucket}/keep");
        Assert.True(restore.ExitCode == 0, restore.ToString());
        TreeSnapshot.AssertSame(expected, TreeSnapshot.Take(restored), "restored from a delta cut");

        // Two sessions of one job: the second, from another cache (another runner), is a delta against the first.
        var trees = new List<SortedDictionary<string, Entry>>();
        for (var i = 0; i < 2; i++)
        {
            var work = _tmp.Sub($"work{i}");
            Directory.CreateDirectory(work);
            var r = RemoteStoreTests.Run(server.Environment(_tmp.Sub($"cache-runner{i}")), work, "record", "--trace", $"s3://{S3rverProcess.Bucket}/ci", "--",
                "bash", "-c", "mkdir -p out; for i in 1 2 3; do echo step $i >> out/log; done; printf 'pid=1\\n' > lock");
            Assert.True(r.ExitCode == 0, r.ToString());
            trees.Add(TreeSnapshot.Take(work));
        }

        var sessions = Manifests(bucket, "ci").OrderBy(m => m.Key, StringComparer.Ordinal).ToList();
        Assert.Null(sessions[0].Base);
        Assert.Equal(sessions[0].Segment, sessions[1].Base);
        var reader = server.Environment(_tmp.Sub("cache-reader"));
        for (var n = 1; n <= 2; n++)
        {
            var outDir = _tmp.Sub($"out{n}");
            var export = RemoteStoreTests.Run(reader, _tmp.Path, "export", "--trace", $"s3://{S3rverProcess.Bucket}/ci", "--session", n.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", outDir);
            Assert.True(export.ExitCode == 0, export.ToString());
            TreeSnapshot.AssertSame(trees[n - 1], TreeSnapshot.Take(outDir), $"session {n}");
        }

        // What earlier versions wrote still reads: session 2 as a format-2 manifest (generation 2) naming a delta
        // segment of the first form (magic DKSEGD\n\0, the database's length and the base's SHA-256 before the frame).
        var compact = File.ReadAllBytes(Path.Combine(bucket, "ci", "segments", sessions[1].Segment + ".seg._S3rver_object"));
        Assert.Equal("DKSEGD\n\u0002"u8.ToArray(), compact[..8]);
        var frame = compact[8..];
        var database = new byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(database, ZstdContentSize(frame));
        byte[] old = [.. "DKSEGD\n\0"u8.ToArray(), .. database, .. Convert.FromHexString(sessions[1].Base!), .. frame];
        var oldSha = RemoteLayout.Sha(old);
        using (var store = new S3ObjectStore(S3Location.Parse($"s3://{S3rverProcess.Bucket}/ci"), reader.GetValueOrDefault))
        {
            var m = SessionManifest.Parse(RemoteLayout.Manifest(sessions[1].Key, 1), File.ReadAllBytes(Directory.EnumerateFiles(Path.Combine(bucket, "ci", "sessions", sessions[1].Key)).Single(f => f.EndsWith("0000000001.json._S3rver_object", StringComparison.Ordinal))));
            var format2 = $$"""{"format":2,"key":"{{m.Key}}","generation":2,"state":"{{m.State}}","started_wall_ns":{{m.StartedWallNs}},"ended_ns":{{m.EndedNs}},"exit_code":{{m.ExitCode}},"command":{{JsonSerializer.Serialize(m.Command)}},"host":{{JsonSerializer.Serialize(m.Host)}},"capture":"{{m.Capture}}","roots":{{JsonSerializer.Serialize(m.Roots)}},"events":{{m.Events}},"segment":"{{oldSha}}","segment_size":{{old.Length}},"segment_base":"{{m.SegmentBase}}","packs":{{JsonSerializer.Serialize(m.Packs)}},"uploaded_bytes":0}""";
            await store.PutAsync(RemoteLayout.Segment(oldSha), old, createOnly: true, CancellationToken.None);
            await store.PutAsync(RemoteLayout.Manifest(m.Key, 2), System.Text.Encoding.UTF8.GetBytes(format2), createOnly: true, CancellationToken.None);
        }

        var oldExport = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-old")), _tmp.Path, "export", "--trace", $"s3://{S3rverProcess.Bucket}/ci", "--session", "2", "--out", _tmp.Sub("out-old"));
        Assert.True(oldExport.ExitCode == 0, oldExport.ToString());
        TreeSnapshot.AssertSame(trees[1], TreeSnapshot.Take(_tmp.Sub("out-old")), "session 2 as an earlier version wrote it");

        // The base damaged in the bucket: a reader with an empty cache says so (exit 5), naming it.
        var baseObject = Path.Combine(bucket, "ci", "segments", sessions[1].Base + ".seg._S3rver_object");
        var bytes = File.ReadAllBytes(baseObject);
        bytes[^10] ^= 0xFF;
        File.WriteAllBytes(baseObject, bytes);
        var damaged = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-late")), _tmp.Path, "export", "--trace", $"s3://{S3rverProcess.Bucket}/ci", "--session", "2", "--out", _tmp.Sub("out-damaged"));
        Assert.True(damaged.ExitCode == 5, damaged.ToString());
        Assert.Contains(sessions[1].Base!, damaged.Stderr, StringComparison.Ordinal);
    }

    /// <summary>The content size a zstd frame header declares (single-segment or not), as the format requires it set.</summary>
    private static long ZstdContentSize(byte[] frame) => DiffKeeper.Storage.Codecs.Zstd.FrameContentSize(frame) ?? throw new InvalidDataException("no content size");

    private sealed record Manifest(string Key, int Format, string Segment, long SegmentSize, string? Base);

    /// <summary>Every manifest generation under <paramref name="prefix"/>, read from s3rver's files.</summary>
    private static List<Manifest> Manifests(string bucket, string prefix) =>
        [.. Directory.EnumerateFiles(Path.Combine(bucket, prefix, "sessions"), "*.json._S3rver_object", SearchOption.AllDirectories).Select(f =>
        {
            var bytes = File.ReadAllBytes(f);
            var name = $"sessions/{Path.GetFileName(Path.GetDirectoryName(f))}/{Path.GetFileName(f)[..^"._S3rver_object".Length]}";
            var m = SessionManifest.Parse(name, bytes);
            using var doc = JsonDocument.Parse(bytes);
            return new Manifest(m.Key, doc.RootElement.GetProperty("format").GetInt32(), m.Segment, m.SegmentSize, m.SegmentBase);
        })];
}
