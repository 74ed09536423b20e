using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Blobs read through a <see cref="GroupBuffer"/>, as a tree export's workers read them: the bytes equal a plain read's,
/// and nothing is decoded into the reader's shared cache (slices of other groups go to the buffer's side buffer, a
/// chain's intermediate bases to rented arrays). Against a real trace of grouped small files edited over three
/// sessions, so that it holds delta chains and deltas of two-chunk files whose chunks lie in two groups.
/// </summary>
public sealed class GroupBufferTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    /// <summary>Source-like text of 24 to 64 KiB (so most are two or three chunks), deterministic per seed.</summary>
    private static List<string> Lines(int seed)
    {
        var rng = new Random(seed);
        string[] words = ["alpha", "beta", "value", "index", "buffer", "result", "handle", "offset", "length", "node", "tree", "state"];
        var lines = new List<string>();
        var target = rng.Next(24 << 10, 64 << 10);
        for (var size = 0; size < target;)
        {
            var line = $"{new string(' ', 4 * rng.Next(4))}{words[rng.Next(words.Length)]}_{rng.Next(100000)} = {words[rng.Next(words.Length)]}({rng.Next(1000)});";
            lines.Add(line);
            size += line.Length + 1;
        }

        return lines;
    }

    /// <summary>Three sessions of 80 files, each editing one line of every file: chains of two deltas by the third.</summary>
    private string Trace()
    {
        var trace = _dir.Sub("t");
        var files = Enumerable.Range(0, 80).ToDictionary(i => $"src/f{i:D3}.cs", Lines);
        var w = TraceWriter.Open(trace);
        for (var session = 0; session < 3; session++)
        {
            foreach (var (name, lines) in files)
            {
                if (session > 0)
                {
                    lines[(session * 7 + name.Length) % lines.Count] = $"    edited_{session} = value({session});";
                }
            }

            var sid = w.BeginSession("test", _dir.Path, "test", 1_000_000_000, [_dir.Path], out var roots);
            w.InheritBaseline(sid);
            foreach (var (rel, lines) in files.OrderBy(f => f.Key, StringComparer.Ordinal))
            {
                var content = Encoding.UTF8.GetBytes(string.Join('\n', lines) + "\n");
                var path = Path.Combine(_dir.Path, "src-" + Guid.NewGuid().ToString("N"));
                File.WriteAllBytes(path, content);
                using (var h = File.OpenHandle(path))
                {
                    var pathId = w.PathId(roots[0], rel);
                    var c = FileIngest.Ingest(w, h, content.Length, previous: () => w.InheritedExtents(pathId));
                    w.AddVersion(sid, new NewVersion(pathId, 0, 0, EntryKind.File, 0x1A4, 0, 0, 123, c.Size, c.ContentId, null, c.Extents));
                }

                File.Delete(path);
            }

            w.EndBaseline(sid);
            w.Commit();
        }

        w.Dispose();

        // The pass after the session groups the whole chunks `record` left (a two-chunk file's first): a delta's
        // two bases are then slices of two groups.
        StoreMaintenance.Run(trace, new MaintenanceOptions(), DateTimeOffset.UtcNow);
        return trace;
    }

    private static long? GroupOfSlice(TraceReader r, long row) => r.Blob(row) is { IsSlice: true, Bases: [var group] } ? group : null;

    [Fact]
    public void A_blob_read_through_a_group_buffer_equals_its_plain_read_and_nothing_is_cached()
    {
        var trace = Trace();
        using var plain = TraceReader.Open(trace);
        using var held = TraceReader.Open(trace);
        var blobs = plain.AllBlobs().Where(b => b.Codec != BlobCodec.Group).ToList();

        // What makes the test mean something: chains, and deltas against two chunks in two groups.
        Assert.Contains(blobs, b => b.IsDelta && b.Bases.Any(x => plain.Blob(x).IsDelta));
        Assert.Contains(blobs, b => b.IsDelta && b.Bases.Select(x => GroupOfSlice(plain, x)).OfType<long>().Distinct().Count() == 2);

        // As an export's worker: the buffer pointed at the group the blob's bytes start from; then at none, so that
        // every slice comes from the side buffer, which a delta of two groups' chunks fills twice in one decode.
        foreach (var group in new Func<BlobLocation, long>[] { b => held.Blobs.GroupOf(b) ?? -1, _ => -1 })
        {
            var buffer = new GroupBuffer();
            foreach (var blob in blobs)
            {
                buffer.Group = group(blob);
                var want = new byte[blob.RawLength];
                plain.Blobs.Read(blob, want);
                var got = new byte[blob.RawLength];
                held.Blobs.Read(blob, got, buffer);
                Assert.True(want.AsSpan().SequenceEqual(got), $"blob row {blob.BlobRowId} ({blob.Codec}) read through a group buffer of group {buffer.Group}");
            }
        }

        Assert.True(plain.Blobs.CachedBlobs > 0); // the plain reads cache their groups and bases
        Assert.Equal(0, held.Blobs.CachedBlobs);
    }
}
