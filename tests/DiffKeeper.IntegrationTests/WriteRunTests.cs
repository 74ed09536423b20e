using System.Globalization;
using System.Text;
using System.Text.Json;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Write runs (store format 7): a write storm recorded with eBPF is a few catalog rows, and `timeline` and `export`
/// show every write as the one-row-per-event form did: each write's seq, offset, length, size and pid, and the
/// files exactly as they were right after it. Expectations come from the workload's own writes.
/// </summary>
public sealed class WriteRunTests : IDisposable
{
    private readonly TempDir _dir = new();

    public WriteRunTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static byte[] Record(int i) => Encoding.ASCII.GetBytes(i.ToString("D15", CultureInfo.InvariantCulture) + "\n");

    // One process: 120 appends to log.bin (one run), 40 writes alternating between log.bin and other.bin (a run
    // each), then a child writes 20 records to log.bin (another pid) and, once it has exited, the parent 20 more.
    private const string Workload = """
        import os, sys
        def rec(i): return b'%015d\n' % i
        log = os.open('log.bin', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        other = os.open('other.bin', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        n = 0
        for i in range(120):
            os.write(log, rec(n)); n += 1
        for i in range(40):
            if i % 2 == 0:
                os.write(log, rec(n)); n += 1
            else:
                os.write(other, rec(1000 + i))
        pid = os.fork()
        if pid == 0:
            for i in range(20):
                os.write(log, rec(n + i))
            os._exit(0)
        os.waitpid(pid, 0)
        n += 20
        for i in range(20):
            os.write(log, rec(n)); n += 1
        """;

    [Fact]
    public void Every_write_of_a_storm_shows_and_exports_as_it_was_right_after_it()
    {
        EbpfSupport.SkipUnlessAvailable();
        File.WriteAllText(_dir.Sub("w.py"), Workload);
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "python3", _dir.Sub("w.py"));

        // What each write did, from the workload: path, offset, and the file's bytes after it.
        var expected = new List<(string Path, long Offset, byte[] After, bool Child)>();
        var log = new List<byte>();
        var other = new List<byte>();
        void Write(string path, byte[] record, bool child = false)
        {
            var file = path == "log.bin" ? log : other;
            expected.Add((path, file.Count, [.. file.Concat(record)], child));
            file.AddRange(record);
        }

        var n = 0;
        for (var i = 0; i < 120; i++)
        {
            Write("log.bin", Record(n++));
        }

        for (var i = 0; i < 40; i++)
        {
            Write(i % 2 == 0 ? "log.bin" : "other.bin", i % 2 == 0 ? Record(n++) : Record(1000 + i));
        }

        for (var i = 0; i < 40; i++)
        {
            Write("log.bin", Record(n++), child: i < 20);
        }

        var writes = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"))
            .Where(e => e.GetProperty("op").GetString() == "WRITE").ToList();
        Assert.Equal(expected.Select(x => (x.Path, x.Offset, 16L, (long)x.After.Length)),
            writes.Select(e => (e.GetProperty("path").GetString()!, e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("size").GetInt64())));
        var pids = writes.Select(e => e.GetProperty("pid").GetInt32()).ToList();
        var parent = pids[0];
        Assert.Equal(expected.Select(x => x.Child), pids.Select(p => p != parent));
        Assert.Single(pids.Where((_, i) => expected[i].Child).Distinct());
        var seqs = writes.Select(e => e.GetProperty("seq").GetInt64()).ToList();
        Assert.Equal(Enumerable.Range(0, 120).Select(i => seqs[0] + i), seqs.Take(120)); // consecutive: the first run

        // Fewer rows than events: the first 121 writes are one row, each later alternating write one, the child's run one, the parent's last one.
        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true))
        using (var rows = db.Prepare("SELECT count(*), count(run) FROM events WHERE op = 2"))
        {
            Assert.True(rows.Step());
            Assert.InRange(rows.Int64(0), 42, 199); // the first alternating write extends the first run; more rows when a commit cut a run
            Assert.InRange(rows.Int64(1), 3, 100);
        }

        // Every write's moment: by its number, and by its time since start (the last event at or before it).
        for (var i = 0; i < writes.Count; i++)
        {
            var outDir = _dir.Sub($"at-{i}");
            var seq = seqs[i].ToString(CultureInfo.InvariantCulture);
            var at = i % 10 == 0
                ? string.Create(CultureInfo.InvariantCulture, $"{writes[i].GetProperty("time_ns").GetInt64() / 1e9:0.000000000}s")
                : "#" + seq;
            using var summary = JsonDocument.Parse(Cli.Ok(Work, "export", "--trace", Trace, "--time", at, "--json", "--out", outDir).Stdout);
            Assert.Equal(seqs[i], summary.RootElement.GetProperty("seq").GetInt64());
            var (path, _, after, _) = expected[i];
            Assert.Equal(after, File.ReadAllBytes(Path.Combine(outDir, path)));
            var last = expected.Take(i + 1).LastOrDefault(x => x.Path != path);
            if (last.Path is not null)
            {
                Assert.Equal(last.After, File.ReadAllBytes(Path.Combine(outDir, last.Path)));
            }
        }

        Cli.Ok(Work, "verify", "--read-data", "--trace", Trace);
    }

    [Fact]
    public void A_storm_of_twenty_thousand_appends_is_a_few_rows_and_every_write_reads_back()
    {
        EbpfSupport.SkipUnlessAvailable();
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "python3", "-c",
            "import os\nfd = os.open('s.bin', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)\nfor i in range(20000): os.write(fd, b'%015d\\n' % i)");
        var writes = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json", "--path", "s.bin"))
            .Where(e => e.GetProperty("op").GetString() == "WRITE").ToList();
        Assert.Equal(Enumerable.Range(0, 20000).Select(i => (i * 16L, 16L, i * 16L + 16)),
            writes.Select(e => (e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("size").GetInt64())));
        Assert.Equal(Enumerable.Range(0, 20000).Select(i => writes[0].GetProperty("seq").GetInt64() + i), writes.Select(e => e.GetProperty("seq").GetInt64()));

        using (var db = SqliteDatabase.Open(Path.Combine(Trace, "catalog.db"), readOnly: true))
        using (var rows = db.Prepare("SELECT count(*) FROM events"))
        {
            Assert.InRange(rows.ScalarInt64() ?? 0, 6, 2000); // at least 5 rows of at most 4,096 writes; more when commits cut runs
        }

        // Where the recorder kept an exact version, the export is the file right after that write; else an earlier state.
        var sessions = JsonDocument.Parse(Cli.Ok(Work, "sessions", "--trace", Trace, "--json").Lines[0]).RootElement;
        Assert.Equal(writes[^1].GetProperty("seq").GetInt64() + 1, sessions.GetProperty("events").GetInt64()); // then EXIT
        var previous = 0L;
        foreach (var i in new[] { 0, 1, 4095, 4096, 4097, 12345, 19999 })
        {
            var outDir = _dir.Sub($"at-{i}");
            Cli.Ok(Work, "export", "--trace", Trace, "--time", "#" + writes[i].GetProperty("seq").GetInt64().ToString(CultureInfo.InvariantCulture), "--out", outDir);
            var bytes = File.Exists(Path.Combine(outDir, "s.bin")) ? File.ReadAllBytes(Path.Combine(outDir, "s.bin")) : [];
            Assert.InRange(bytes.Length, previous, (i + 1) * 16L);
            Assert.Equal(Enumerable.Range(0, bytes.Length / 16).SelectMany(Record), bytes);
            previous = bytes.Length;
        }

        Assert.Equal(20000 * 16, previous);
        Cli.Ok(Work, "verify", "--read-data", "--trace", Trace);
    }
}
