using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `record --capture ebpf` of a program rewriting scattered pages of a 256 MiB sparse file (above the default
/// `--big-file`): versions read only the blocks the write events touched while the witness vouches for the file,
/// and every version is still what a whole read could have given. Every page any write puts there is
/// self-describing (the write's number and the page's number, then bytes derived from both by SHA-256), so each
/// exported version is checked page by page: every page holds a write that really happened to it (or its first
/// bytes, or a hole where there were none), never one older than the last write whose event came at or before the
/// version's event; and the file holds data nowhere else (hole for hole).
/// </summary>
public sealed class RecordBigFileTests : IDisposable
{
    private const int P = 4096;
    private const long Size = 256L << 20;
    private const int InitialPages = 8192; // 32 MiB of data before the recording
    private const long Outside = 1_000_000; // the write numbers of changes no event shows (an outside process, a mapping)

    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    // The page the app and the outsider write: k counts writes, p is the page number (Page below computes the same).
    private const string PageDef = """
        P = 4096
        def page(k, p):
            h = k.to_bytes(8, 'little') + p.to_bytes(8, 'little')
            body = b''.join(hashlib.sha256(h + i.to_bytes(4, 'little')).digest() for i in range(P // 32))
            return (h + body)[:P]

        """;

    // page(k, p) as Page below computes it. The app logs "k p" per pwrite (k counts its pwrites from 1) and its pid.
    private const string App = """
        import hashlib, mmap, os, random, sys, time
        path, log, mode = sys.argv[1:4]

        """ + PageDef + """
        r = random.Random(7)
        fd = os.open(path, os.O_RDWR)
        k = 0
        with open(log, 'w') as f:
            f.write(f'pid {os.getpid()}\n')
        def write(p):
            global k
            k += 1
            os.pwrite(fd, page(k, p), p * P)
            with open(log, 'a') as f:
                f.write(f'{k} {p}\n')
        for round in range(6):
            for _ in range(40):
                write(r.randrange(16, (256 << 20) // P))
            time.sleep(0.3)
            if round == 2 and mode == 'outsider':
                go, ack = sys.argv[4:6]
                open(go, 'w').close()
                while not os.path.exists(ack):
                    time.sleep(0.01)
            if round == 2 and mode == 'mmap':
                m = mmap.mmap(fd, 256 << 20, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                m[5 * P:6 * P] = page(2_000_000, 5)
                write(6)
                time.sleep(0.3)
                m[7 * P:8 * P] = page(2_000_001, 7)
                m.close()
        os.close(fd)
        """;

    // Started by the test, not by the app: eBPF does not follow it.
    private const string Outsider = """
        import hashlib, os, sys, time
        path, go, ack = sys.argv[1:4]

        """ + PageDef + """
        while not os.path.exists(go):
            time.sleep(0.01)
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, page(1_000_000, 3), 3 * P)
        os.pwrite(fd, page(1_000_001, 9), 9 * P)
        os.close(fd)
        open(ack, 'w').close()
        """;

    [Fact]
    public void Scattered_rewrites_are_versioned_from_their_written_blocks_and_every_version_is_exact()
    {
        var (summary, stderr) = Record("rewrite");
        var fromWrites = summary.GetProperty("big_file_versions_from_writes").GetInt64();
        var read = summary.GetProperty("big_file_bytes_read").GetInt64();
        Assert.True(fromWrites >= 2, $"fewer than 2 versions from written blocks: {stderr}");
        // The baseline reads the 32 MiB of data once; every later version together reads less than that again (the
        // written 64 KiB blocks: 240 writes at most 15 MiB), where a whole read per version reads 32 MiB each.
        Assert.True(read - InitialPages * (long)P < InitialPages * (long)P, $"big files read {read} bytes: {stderr}");
    }

    [Fact]
    public void A_process_outside_the_recorded_tree_writing_the_file_is_in_the_last_version()
    {
        var (go, ack) = (_dir.Sub("go"), _dir.Sub("ack"));
        var outsider = _dir.Sub("outsider.py");
        File.WriteAllText(outsider, Outsider);
        using var other = System.Diagnostics.Process.Start("python3", [outsider, Image, go, ack]);
        var (_, stderr) = Record("outsider", go, ack);
        Assert.True(other.WaitForExit(10_000), "the outsider did not finish");
        Assert.True(File.Exists(ack), "the outsider did not write: " + stderr);
    }

    [Fact]
    public void A_shared_writable_mapping_by_the_recorded_program_is_in_the_last_version()
    {
        var (summary, stderr) = Record("mmap");
        if (summary.GetProperty("big_file_versions_from_writes").GetInt64() > 0)
        {
            Assert.Contains("big files are read whole from now on", stderr, StringComparison.Ordinal);
        }
    }

    private string State => _dir.Sub("data");

    private string Image => Path.Combine(State, "image");

    private string Trace => _dir.Sub("trace");

    /// <summary>Records the app in <paramref name="mode"/>, then checks every version and the last one (see the class comment).</summary>
    private (JsonElement Summary, string Stderr) Record(string mode, params string[] extra)
    {
        EbpfSupport.SkipUnlessAvailable();
        Directory.CreateDirectory(State);
        var initial = MakeImage(Image);
        var app = _dir.Sub("app.py");
        var log = _dir.Sub("writes.txt");
        File.WriteAllText(app, App);
        var r = Cli.Run(_dir.Path, ["record", "--trace", Trace, "--watch", State, "--capture", "ebpf", "--no-compact", "--json", "--",
            "python3", app, Image, log, mode, .. extra]);
        Assert.True(r.ExitCode == 0, r.ToString());
        var summary = JsonDocument.Parse(r.Stderr.Trim().Split('\n')[^1]).RootElement.Clone();
        Assert.Equal(0, summary.GetProperty("lost_events").GetInt64());

        // Write k of the app is its k-th write event of the image (by its pid, in seq order): k → (page, seq).
        var lines = File.ReadAllLines(log);
        var pid = int.Parse(lines[0].Split(' ')[1], CultureInfo.InvariantCulture);
        var writes = lines.Skip(1).Select(l => l.Split(' ')).Select(f => long.Parse(f[1], CultureInfo.InvariantCulture)).ToList();
        var events = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", Trace, "--json"))
            .Where(e => e.GetProperty("op").GetString() == "WRITE" && e.GetProperty("path").GetString() == "image" &&
                e.GetProperty("pid").ValueKind == JsonValueKind.Number && e.GetProperty("pid").GetInt32() == pid)
            .OrderBy(e => e.GetProperty("seq").GetInt64()).ToList();
        Assert.Equal(writes.Count, events.Count);
        var seqOf = new long[writes.Count];
        for (var k = 0; k < writes.Count; k++)
        {
            Assert.Equal(writes[k] * P, events[k].GetProperty("offset").GetInt64());
            seqOf[k] = events[k].GetProperty("seq").GetInt64();
        }

        var pages = initial.Concat(writes).Concat([3L, 5, 7, 9]).ToHashSet();
        using var json = JsonDocument.Parse(Cli.Ok(_dir.Path, "log", Image, "--trace", Trace, "--json").Stdout);
        var versions = json.RootElement.GetProperty("versions").EnumerateArray().Where(v => v.GetProperty("kind").GetString() == "file")
            .Select(v => v.GetProperty("seq").GetInt64()).ToList();
        Assert.True(versions.Count >= 3, json.RootElement.ToString());
        var exported = _dir.Sub("exported");
        foreach (var seq in versions)
        {
            Cli.Ok(_dir.Path, "export", "--trace", Trace, "--time", "#" + seq.ToString(CultureInfo.InvariantCulture), "--out", exported, "--force");
            var file = Path.Combine(exported, "image");
            Assert.Equal(Size, new FileInfo(file).Length);
            // The last write of each page whose event came at or before this version's: the version must hold it or a later one.
            var due = new Dictionary<long, long>();
            for (var k = 0; k < writes.Count && seqOf[k] <= seq; k++)
            {
                due[writes[k]] = k + 1;
            }

            CheckPages(file, pages, initial, due, $"the version at #{seq} ({mode}): {r.Stderr}");
        }

        // The last version is the file, byte for byte and hole for hole.
        Cli.Ok(_dir.Path, "export", "--trace", Trace, "--out", exported, "--force");
        var last = Path.Combine(exported, "image");
        Assert.True(File.ReadAllBytes(Image).AsSpan().SequenceEqual(File.ReadAllBytes(last)), $"the last version differs from the file ({mode}): {r.Stderr}");
        Assert.Equal(DataRanges(Image), DataRanges(last));
        return (summary, r.Stderr);
    }

    /// <summary>
    /// Every page of <paramref name="file"/> that may hold data holds a write made to it (or a hole where it had no data
    /// yet), at least the one <paramref name="due"/> names; data nowhere else.
    /// </summary>
    private static void CheckPages(string file, HashSet<long> pages, HashSet<long> initial, Dictionary<long, long> due, string what)
    {
        using var handle = File.OpenHandle(file);
        foreach (var (s, e) in DataRanges(file))
        {
            for (var p = s / P; p < (e + P - 1) / P; p++)
            {
                Assert.True(pages.Contains(p), $"data at page {p}, which nothing wrote: {what}");
            }
        }

        var buffer = new byte[P];
        foreach (var p in pages)
        {
            Assert.Equal(P, RandomAccess.Read(handle, buffer, p * P));
            var k = BinaryPrimitives.ReadInt64LittleEndian(buffer);
            var page = BinaryPrimitives.ReadInt64LittleEndian(buffer.AsSpan(8));
            if (buffer.AsSpan().IndexOfAnyExcept((byte)0) < 0)
            {
                Assert.True(!initial.Contains(p) && !due.ContainsKey(p), $"page {p} is zeros, where it held data: {what}");
                continue;
            }

            Assert.True(page == p && buffer.AsSpan().SequenceEqual(Page(k, p)), $"page {p} holds no write made to it: {what}");
            Assert.True(k >= due.GetValueOrDefault(p) && (k > 0 || initial.Contains(p)) && (k < Outside || !due.ContainsKey(p)),
                $"page {p} holds write {k}, older than write {due.GetValueOrDefault(p)} whose event came before the version: {what}");
        }
    }

    /// <summary>The 256 MiB sparse image with <see cref="InitialPages"/> pages of data (write 0); returns those pages.</summary>
    private static HashSet<long> MakeImage(string path)
    {
        var r = new Random(3);
        var pages = new HashSet<long>();
        while (pages.Count < InitialPages)
        {
            pages.Add(r.NextInt64(16, Size / P));
        }

        using var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        RandomAccess.SetLength(handle, Size);
        foreach (var p in pages)
        {
            RandomAccess.Write(handle, Page(0, p), p * P);
        }

        return pages;
    }

    /// <summary>What write <paramref name="k"/> puts at page <paramref name="p"/> (the apps' page(k, p)).</summary>
    private static byte[] Page(long k, long p)
    {
        var page = new byte[P];
        BinaryPrimitives.WriteInt64LittleEndian(page, k);
        BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(8), p);
        var input = new byte[20];
        page.AsSpan(0, 16).CopyTo(input);
        var body = new byte[P];
        for (var i = 0; i < P / 32; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(input.AsSpan(16), i);
            SHA256.HashData(input, body.AsSpan(i * 32));
        }

        body.AsSpan(0, P - 16).CopyTo(page.AsSpan(16));
        return page;
    }

    private static List<(long, long)> DataRanges(string path)
    {
        using var handle = File.OpenHandle(path);
        return Storage.BigFiles.BlockIngest.DataRanges(handle, 0, RandomAccess.GetLength(handle));
    }
}
