using System.Text;
using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Remote;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// Manifest objects (docs/store-format.md, "Remote stores": manifest): format 3 (compressed fields in a JSON
/// envelope) round-trips and is much smaller than the plain JSON it replaces; manifests of formats 1 and 2, as
/// earlier versions wrote them, still read; damage is exit 5 naming the object, a newer format exit 9.
/// </summary>
public sealed class ManifestFormatTests
{
    private const string Key = "01796577099235226600-ee17e4b97993e28a";
    private const string Name = $"sessions/{Key}/0000000001.json";

    // Written by diffkeeper 0.1.0+11241eb (format 1: a whole segment; format 2: a delta segment).
    private const string Format1 = """{"format":1,"key":"01796577099235226600-ee17e4b97993e28a","generation":1,"state":"finished","started_wall_ns":1796577099235226600,"ended_ns":2494657646,"exit_code":1,"command":"bash flaky_test.sh","host":"vm","capture":"ebpf","roots":["/tmp/remote-bench/ex/before/w1"],"events":23,"segment":"240d35c838002a950ab236e56e0dc825c425656bbb0a11c9688fb4ba199913ee","segment_size":4447,"packs":["0aa3bb087a58a65fe219f0c1c8871550dd470d8319f5010188cc33867bf7fb6d"],"uploaded_bytes":4576}""";
    private const string Format2 = """{"format":2,"key":"01796577099235226600-ee17e4b97993e28a","generation":1,"state":"finished","started_wall_ns":1796577099235226600,"ended_ns":2499443813,"exit_code":1,"command":"bash flaky_test.sh","host":"vm","capture":"ebpf","roots":["/tmp/remote-bench/ex/before/w2"],"events":23,"segment":"ee18fb7e42b27d99e586e5b1f689b0bdc276f9cdb42ef6bb48135ffa24d67ab0","segment_size":466,"segment_base":"240d35c838002a950ab236e56e0dc825c425656bbb0a11c9688fb4ba199913ee","packs":["0aa3bb087a58a65fe219f0c1c8871550dd470d8319f5010188cc33867bf7fb6d"],"uploaded_bytes":0}""";

    [Fact]
    public void Format_3_round_trips_and_is_much_smaller_than_format_2()
    {
        var old = SessionManifest.Parse(Name, Encoding.UTF8.GetBytes(Format2));
        var bytes = old.ToJson();
        using (var envelope = JsonDocument.Parse(bytes))
        {
            Assert.Equal(3, envelope.RootElement.GetProperty("format").GetInt32());
        }

        var back = SessionManifest.Parse(Name, bytes);
        Assert.Equal((Key, 1L), (back.Key, back.Generation));
        Assert.Equal(Describe(old), Describe(back));
        Assert.True(bytes.Length * 10 < Format2.Length * 7, $"a format-3 manifest of {bytes.Length} bytes for a format-2 one of {Format2.Length}");

        var marker = SessionManifest.Parse($"forgotten/{Key}.json", bytes);
        Assert.Equal((Key, 0L, old.Segment, old.SegmentBase), (marker.Key, marker.Generation, marker.Segment, marker.SegmentBase));
        Assert.Equal(old.Packs, marker.Packs);
    }

    [Fact]
    public void Manifests_of_formats_1_and_2_still_read()
    {
        var one = SessionManifest.Parse(Name, Encoding.UTF8.GetBytes(Format1));
        Assert.Equal((Key, 1L, "finished", 1796577099235226600L, 2494657646L, (int?)1), (one.Key, one.Generation, one.State, one.StartedWallNs, one.EndedNs, one.ExitCode));
        Assert.Equal(("bash flaky_test.sh", "vm", "ebpf", 23L, 4447L, 4576L), (one.Command, one.Host, one.Capture, one.Events, one.SegmentSize, one.UploadedBytes));
        Assert.Equal(["/tmp/remote-bench/ex/before/w1"], one.Roots);
        Assert.Equal(["0aa3bb087a58a65fe219f0c1c8871550dd470d8319f5010188cc33867bf7fb6d"], one.Packs);
        Assert.Null(one.SegmentBase);
        var two = SessionManifest.Parse(Name, Encoding.UTF8.GetBytes(Format2));
        Assert.Equal("240d35c838002a950ab236e56e0dc825c425656bbb0a11c9688fb4ba199913ee", two.SegmentBase);
        Assert.Equal("ee18fb7e42b27d99e586e5b1f689b0bdc276f9cdb42ef6bb48135ffa24d67ab0", two.Segment);
    }

    [Fact]
    public void A_damaged_format_3_manifest_is_exit_5_naming_it_and_a_newer_format_exit_9()
    {
        var good = SessionManifest.Parse(Name, Encoding.UTF8.GetBytes(Format2)).ToJson();
        using var doc = JsonDocument.Parse(good);
        var frame = doc.RootElement.GetProperty("zstd").GetBytesFromBase64();
        frame[^3] ^= 0x55;
        foreach (var damaged in new[]
        {
            $$"""{"format":3,"zstd":"{{Convert.ToBase64String(frame)}}"}""",
            """{"format":3,"zstd":"not base64!"}""",
            """{"format":3,"zstd":""}""",
            $$"""{"format":3,"zstd":"{{Convert.ToBase64String(Encoding.UTF8.GetBytes("{}"))}}"}""",
        })
        {
            var e = Assert.Throws<DiffKeeperException>(() => SessionManifest.Parse(Name, Encoding.UTF8.GetBytes(damaged)));
            Assert.Equal(ExitCode.Corrupt, e.Code);
            Assert.Contains(Name, e.Message, StringComparison.Ordinal);
        }

        var unnamed = Assert.Throws<DiffKeeperException>(() => SessionManifest.Parse("elsewhere.json", good));
        Assert.Equal(ExitCode.Corrupt, unnamed.Code);
        var newer = Assert.Throws<DiffKeeperException>(() => SessionManifest.Parse(Name, """{"format":4}"""u8.ToArray()));
        Assert.Equal(ExitCode.UnsupportedFormat, newer.Code);
    }

    private static string Describe(SessionManifest m) =>
        string.Join('|', m.State, m.StartedWallNs, m.EndedNs, m.ExitCode, m.Command, m.Host, m.Capture, string.Join(',', m.Roots), m.Events,
            m.Segment, m.SegmentSize, m.SegmentBase, string.Join(',', m.Packs), m.UploadedBytes);
}
