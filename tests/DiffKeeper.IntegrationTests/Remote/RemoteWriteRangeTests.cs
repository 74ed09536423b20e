using System.Text.Json;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// Each event's offset and length (store format 4) survive the remote store (a real S3 server, s3rver): an eBPF
/// recording with writes, a burst, allocating fallocates (with and without KEEP_SIZE) and a punched hole, pushed and
/// pulled back, or read straight from the bucket, has the timeline of the local trace, event for event.
/// </summary>
public sealed class RemoteWriteRangeTests : IDisposable
{
    private readonly TempDir _tmp = new();

    public void Dispose() => _tmp.Dispose();

    [Fact]
    public void A_pushed_and_pulled_ebpf_trace_keeps_every_events_offset_and_length()
    {
        EbpfSupport.SkipUnlessAvailable();
        var work = _tmp.Sub("work");
        Directory.CreateDirectory(work);
        WriteRangeTests.SkipUnlessFallocate(work);
        using var server = S3rverProcess.Start(_tmp.Sub("s3"));
        var local = _tmp.Sub("trace");
        Cli.Ok(work, "record", "-q", "--capture", "ebpf", "--trace", local, "--", "sh", "-c", WriteRangeTests.Script + "; " + WriteRangeTests.FallocateScript);
        var expected = Cli.Ok(work, "timeline", "--trace", local, "--json").Lines;

        // What the comparison must carry: a write's, a burst's, a punched hole's and both allocations' ranges.
        var ranges = expected.Select(l => JsonDocument.Parse(l).RootElement)
            .Where(e => e.GetProperty("length").ValueKind == JsonValueKind.Number)
            .Select(e => (e.GetProperty("path").GetString(), e.GetProperty("offset").GetInt64(), e.GetProperty("length").GetInt64(), e.GetProperty("detail").GetString()))
            .ToList();
        Assert.Contains(("data.bin", 8192L, 4096L, (string?)null), ranges);
        Assert.Equal(20, ranges.Count(r => r.Item1 == "burst.bin"));
        Assert.Contains(("f", 8192L, 65536L, "fallocate"), ranges);
        Assert.Contains(("f", 131072L, 4096L, "fallocate"), ranges);
        Assert.Contains(("f", 8192L, 4096L, "punch hole"), ranges);

        var url = $"s3://{S3rverProcess.Bucket}/ranges";
        var push = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-push")), work, "push", local, url);
        Assert.True(push.ExitCode == 0, push.ToString());
        var pulled = _tmp.Sub("pulled");
        var pull = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-pull")), work, "pull", url, pulled);
        Assert.True(pull.ExitCode == 0, pull.ToString());
        Assert.Equal(expected, Cli.Ok(work, "timeline", "--trace", pulled, "--json").Lines);

        var direct = RemoteStoreTests.Run(server.Environment(_tmp.Sub("cache-read")), work, "timeline", "--trace", url, "--json");
        Assert.True(direct.ExitCode == 0, direct.ToString());
        Assert.Equal(expected, direct.Lines);
    }
}
