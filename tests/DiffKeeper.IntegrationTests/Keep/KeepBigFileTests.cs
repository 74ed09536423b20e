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

    // The apps' common start: their arguments, note() (the SHA-256 of the whole file, appended to the log) and the
    // file opened (created) and noted.
    private const string OpenAndNote = """
        import hashlib, mmap, os, random, sys, time
        path, log = sys.argv[1], sys.argv[2]
        def note():
            with open(path, 'rb') as f:
                h = hashlib.sha256(f.read()).hexdigest()
            with open(log, 'a') as f:
                f.write(h + '\n')
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        note()

        """;

    // Rewrites random pages of a sparse file in rounds, grows it, shrinks it; after every change it notes the SHA-256
    // of the whole file (outside the state directory), so every version kept can be checked against a real state.
    private const string App = OpenAndNote + """
        r = random.Random(11)
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

        CheckKept(image, store, log, minVersions: 3, r.Stderr);
    }

    /// <summary>
    /// Every version the store holds of the image is a state the app noted (the states between its rounds), and the
    /// restore is the file byte for byte and hole for hole.
    /// </summary>
    private void CheckKept(string image, string store, string log, int minVersions, string summary)
    {
        var noted = File.ReadAllLines(log).ToHashSet(StringComparer.Ordinal);
        var exported = _dir.Sub("exported");
        using var json = System.Text.Json.JsonDocument.Parse(Cli.Ok(_dir.Path, "log", image, "--trace", store, "--json").Stdout);
        var versions = json.RootElement.GetProperty("versions").EnumerateArray().Where(v => v.GetProperty("kind").GetString() == "file").ToList();
        Assert.True(versions.Count >= minVersions, json.RootElement.ToString());
        foreach (var v in versions)
        {
            var seq = v.GetProperty("seq").GetInt64();
            Cli.Ok(_dir.Path, "export", "--trace", store, "--time", "#" + seq.ToString(System.Globalization.CultureInfo.InvariantCulture), "--out", exported, "--force");
            var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(exported, "image"))));
            Assert.True(noted.Contains(hash), $"the version after event {seq} is no state the app had between its rounds: {summary}");
        }

        var restored = _dir.Sub("restored");
        Cli.Ok(_dir.Path, "restore", "--state-dir", restored, "--store", store);
        var back = Path.Combine(restored, "image");
        Assert.Equal(File.ReadAllBytes(image), File.ReadAllBytes(back));
        Assert.Equal(DataPages(image), DataPages(back));
    }

    // With eBPF: bursts of pwrites between cuts (stored from their written blocks alone), then a process outside the
    // app writes (the witness sees it: the file is read whole), then the app writes through a shared mapping (no event
    // carries it: from then on every cut reads the whole file). The file is above the 64 MiB up to which eBPF's
    // writes are followed in memory instead. Each burst takes about a millisecond, far below the cut's debounce, so
    // every cut falls between bursts, where the app notes the file's SHA-256.
    private const string EbpfApp = OpenAndNote + """
        go, ack = sys.argv[3:5]
        r = random.Random(12)
        os.ftruncate(fd, 80 << 20)
        note()
        first = [(r.randbytes(4096), p * 4096) for p in r.sample(range(1024), 100)]
        for data, at in first:
            os.pwrite(fd, data, at)
        note()
        for round in range(6):
            time.sleep(0.3)
            burst = [(r.randbytes(r.choice([100, 4096, 70000])), p * 4096 + r.randrange(200)) for p in r.sample(range(1024), 12)]
            for data, at in burst:
                os.pwrite(fd, data, at)
            note()
            if round == 1:
                open(go, 'w').close()
                while not os.path.exists(ack):
                    time.sleep(0.01)
                note()
            if round == 3:
                time.sleep(0.3)
                m = mmap.mmap(fd, 80 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                m[8192:8192 + 4096] = r.randbytes(4096)
                os.pwrite(fd, b'after the mapping', 5000)
                note()
                m.close()
        os.close(fd)
        """;

    // The outsider: started by the test, not by the app, so eBPF does not follow it.
    private const string Outsider = """
        import os, sys, time
        path, go, ack = sys.argv[1:4]
        while not os.path.exists(go):
            time.sleep(0.01)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, b'written by a process outside the app' * 100, 70 << 20)
        os.close(fd)
        open(ack, 'w').close()
        """;

    [Fact]
    public void With_ebpf_a_big_file_is_kept_from_its_written_blocks_unless_something_else_wrote_it()
    {
        if (Environment.UserName != "root" || !File.Exists("/sys/kernel/btf/vmlinux"))
        {
            Assert.Skip("the eBPF backend needs root and a kernel with BTF (/sys/kernel/btf/vmlinux)");
        }

        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var log = _dir.Sub("states.txt");
        var app = _dir.Sub("app.py");
        var outsider = _dir.Sub("outsider.py");
        Directory.CreateDirectory(state);
        File.WriteAllText(app, EbpfApp);
        File.WriteAllText(outsider, Outsider);
        var image = Path.Combine(state, "image");
        var (go, ack) = (_dir.Sub("go"), _dir.Sub("ack"));
        using var other = System.Diagnostics.Process.Start("python3", [outsider, image, go, ack]);
        var r = Cli.Run(_dir.Path, "run", "--state-dir", state, "--store", store, "--big-file", "1M", "--capture", "ebpf", "--metrics-addr", "none",
            "--", "python3", app, image, log, go, ack);
        Assert.True(other.WaitForExit(10_000), "the outsider did not finish");
        Assert.True(r.ExitCode == 0, r.ToString());
        Assert.True(File.Exists(ack), "the outsider did not write");
        var fromWrites = FromWritesLine().Match(r.Stderr);
        Assert.True(fromWrites.Success && int.Parse(fromWrites.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) >= 2,
            "no big-file version was stored from its written blocks: " + r.Stderr);

        CheckKept(image, store, log, minVersions: 5, r.Stderr);
    }

    [GeneratedRegex(@"\((\d+) of big files from their written blocks alone\)")]
    private static partial Regex FromWritesLine();

    /// <summary>The file's data extents (SEEK_DATA/SEEK_HOLE), as the holes must come back.</summary>
    private static List<(long, long)> DataPages(string path)
    {
        using var handle = File.OpenHandle(path);
        return Storage.BigFiles.BlockIngest.DataRanges(handle, 0, RandomAccess.GetLength(handle));
    }

    [GeneratedRegex(@"(\d+) cuts \((\d+) with the app stopped")]
    private static partial Regex CutsLine();
}
