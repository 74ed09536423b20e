using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// `run` with a file above `--big-file`: each cut copies its data extents while the app is stopped and stores the
/// changed blocks after it continues (Versioner.DeferBigFiles); what is restored is the file byte for byte and hole
/// for hole, and every committed state is one the app had at a cut.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed partial class KeepBigFileTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    // Rewrites random pages of a sparse file in rounds, grows it, shrinks it; after every change it notes the SHA-256
    // of the whole file (outside the state directory), so every version kept can be checked against a real state.
    private const string App = """
        import hashlib, os, random, sys, time
        path, log = sys.argv[1], sys.argv[2]
        r = random.Random(11)
        def note():
            with open(path, 'rb') as f:
                h = hashlib.sha256(f.read()).hexdigest()
            with open(log, 'a') as f:
                f.write(h + '\n')
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        note()
        os.ftruncate(fd, 2 << 20)
        note()
        for p in r.sample(range(512), 80):
            os.pwrite(fd, r.randbytes(4096), p * 4096)
            note()
        for round in range(6):
            time.sleep(0.3)
            for p in r.sample(range(512), 20):
                os.pwrite(fd, r.randbytes(r.choice([100, 4096, 9000])), p * 4096 + r.randrange(200))
                note()
            if round == 2:
                os.pwrite(fd, r.randbytes(5000), (3 << 20) + 123)
                note()
            if round == 4:
                os.ftruncate(fd, (3 << 19) + 777)
                note()
        os.close(fd)
        """;

    [Fact]
    public void A_big_sparse_file_is_kept_byte_for_byte_and_hole_for_hole_across_cuts()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var log = _dir.Sub("states.txt");
        var app = _dir.Sub("app.py");
        Directory.CreateDirectory(state);
        File.WriteAllText(app, App);
        var image = Path.Combine(state, "image");
        var r = Cli.Run(_dir.Path, "run", "--state-dir", state, "--store", store, "--big-file", "1M", "--metrics-addr", "none",
            "--", "python3", app, image, log);
        Assert.True(r.ExitCode == 0, r.ToString());
        var cuts = CutsLine().Match(r.Stderr);
        Assert.True(cuts.Success, r.Stderr);
        Assert.True(int.Parse(cuts.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= 2, r.Stderr);

        // Every version the store holds of the image is a state the app noted (the states between its rounds).
        var noted = File.ReadAllLines(log).ToHashSet(StringComparer.Ordinal);
        var exported = _dir.Sub("exported");
        using var json = System.Text.Json.JsonDocument.Parse(Cli.Ok(_dir.Path, "log", Path.Combine(state, "image"), "--trace", store, "--json").Stdout);
        var versions = json.RootElement.GetProperty("versions").EnumerateArray().Where(v => v.GetProperty("kind").GetString() == "file").ToList();
        Assert.True(versions.Count >= 3, json.RootElement.ToString());
        foreach (var v in versions)
        {
            var seq = v.GetProperty("seq").GetInt64();
            Cli.Ok(_dir.Path, "export", "--trace", store, "--time", "#" + seq.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", exported, "--force");
            var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(exported, "image"))));
            Assert.True(noted.Contains(hash), $"the version after event {seq} is no state the app had between its rounds");
        }

        var restored = _dir.Sub("restored");
        Cli.Ok(_dir.Path, "restore", "--state-dir", restored, "--store", store);
        var back = Path.Combine(restored, "image");
        Assert.Equal(File.ReadAllBytes(image), File.ReadAllBytes(back));
        Assert.Equal(DataPages(image), DataPages(back));
    }

    /// <summary>The file's data extents (SEEK_DATA/SEEK_HOLE), as the holes must come back.</summary>
    private static List<(long, long)> DataPages(string path)
    {
        using var handle = File.OpenHandle(path);
        return Storage.BigFiles.BlockIngest.DataRanges(handle, 0, RandomAccess.GetLength(handle));
    }

    [GeneratedRegex(@"(\d+) cuts \((\d+) with the app stopped")]
    private static partial Regex CutsLine();
}
