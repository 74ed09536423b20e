using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Replay.Tests;

public sealed class ModeTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Setuid_and_setgid_bits_from_a_trace_are_never_restored()
    {
        using (var w = TraceWriter.Open(_dir.Sub("t")))
        {
            var sid = w.BeginSession("crafted", "/", "test", 0, ["/r"], out var roots);
            var bytes = "#!/bin/sh\n"u8.ToArray();
            var row = w.PutBlob(bytes, out var id);
            var content = ExtentMap.ContentId([(0L, bytes.Length, id)], bytes.Length);
            w.AddVersion(sid, new NewVersion(w.PathId(roots[0], "tool"), 1, 0, EntryKind.File, 0xDFF, 0, 0, 0, bytes.Length, content, null,
                ExtentMap.Encode([new Extent(0, bytes.Length, row)])));
            w.AddVersion(sid, new NewVersion(w.PathId(roots[0], "shared"), 1, 0, EntryKind.Directory, 0x3FF, 0, 0, 0, 0, null, null, null));
            w.Commit();
        }

        using var r = TraceReader.Open(_dir.Sub("t"));
        Materializer.Export(r, r.Session(null), long.MaxValue, _dir.Sub("out"), force: false);
        Assert.Equal((UnixFileMode)0x1FF, File.GetUnixFileMode(_dir.Sub("out/tool")));
        Assert.Equal((UnixFileMode)0x3FF, File.GetUnixFileMode(_dir.Sub("out/shared")));
    }
}
