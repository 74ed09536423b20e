using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`--json` on the commands that report a summary: one object with the documented fields (README, "--json").</summary>
public sealed class JsonSummaryTests : IDisposable
{
    private readonly TempDir _dir = new();

    public JsonSummaryTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static JsonElement One(string text)
    {
        var lines = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        return JsonDocument.Parse(Assert.Single(lines)).RootElement.Clone();
    }

    private static void HasFields(JsonElement o, params string[] fields)
    {
        foreach (var f in fields)
        {
            Assert.True(o.TryGetProperty(f, out _), $"missing {f} in {o}");
        }
    }

    [Fact]
    public void Every_summary_has_a_json_form()
    {
        File.WriteAllText(Path.Combine(Work, "old.txt"), "old\n");
        var record = Cli.Run(Work, "record", "--json", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo hello; echo a > a.txt; sleep 0.3; echo b >> a.txt; exit 3");
        Assert.Equal(3, record.ExitCode);
        Assert.Equal("hello\n", record.Stdout); // stdout stays the command's
        var r = One(record.Stderr);
        HasFields(r, "session", "trace", "exit_code", "events", "versions", "lost_events", "raw_bytes", "stored_bytes");
        Assert.Equal(3, r.GetProperty("exit_code").GetInt32());
        Assert.Equal(Trace, r.GetProperty("trace").GetString());

        var log = One(Cli.Ok(Work, "log", "--json", "--trace", Trace, "a.txt").Stdout);
        Assert.Equal("a.txt", log.GetProperty("path").GetString());
        Assert.Contains(log.GetProperty("events").EnumerateArray(), e => e.GetProperty("op").GetString() == "CREATE");
        var last = log.GetProperty("versions").EnumerateArray().Last();
        HasFields(last, "seq", "time_ns", "kind", "mode", "size", "content", "target", "mtime_ns", "pruned");
        Assert.Equal(4, last.GetProperty("size").GetInt64());

        var verify = One(Cli.Ok(Work, "verify", "--json", "--trace", Trace).Stdout);
        Assert.True(verify.GetProperty("ok").GetBoolean());
        HasFields(verify, "packs", "blobs", "blob_bytes", "versions", "damaged", "problems");

        var export = Cli.Ok(Work, "export", "--json", "--trace", Trace, "--out", _dir.Sub("out"));
        Assert.Equal("", export.Stderr);
        var e = One(export.Stdout);
        Assert.Equal(2, e.GetProperty("files").GetInt32());
        HasFields(e, "session", "seq", "out", "directories", "symlinks", "bytes", "elapsed_ms");

        var gc = One(Cli.Ok(Work, "gc", "--json", "--trace", Trace).Stdout);
        Assert.Equal(JsonValueKind.Null, gc.GetProperty("versions_pruned").ValueKind);
        HasFields(gc, "blobs_swept", "compaction", "packs_repacked", "packs_dropped", "pack_bytes_before", "pack_bytes_after", "pack_files_left");
        var prune = One(Cli.Ok(Work, "prune", "--json", "--keep-last", "1", "--trace", Trace).Stdout);
        Assert.True(prune.GetProperty("versions_pruned").GetInt64() >= 0);
        HasFields(prune, "blobs_swept", "compaction", "pack_bytes_after");

        var restore = One(Cli.Ok(Work, "restore", "--json", "--store", Trace, "--state-dir", _dir.Sub("state")).Stdout);
        Assert.True(restore.GetProperty("restored").GetBoolean());
        Assert.Equal(2, restore.GetProperty("files").GetInt32());
        HasFields(restore, "session", "state_dir", "store", "directories", "symlinks", "bytes", "versions_verified", "elapsed_ms", "kept_existing");
    }
}
