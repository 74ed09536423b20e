using DiffKeeper.Storage;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// A shadow stores each version from its own bytes, keeping the previous version's chunks over the unchanged
/// prefix. Whatever the sequence of writes and truncates, each stored version must be exactly what storing the
/// same bytes from scratch gives: the same extents, blobs and content id, and bytes that read back.
/// </summary>
public sealed class FileShadowTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public void Every_version_stored_incrementally_equals_the_same_bytes_stored_from_scratch(int seed)
    {
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"t{seed}"));
        var shadow = FileShadow.Empty();
        var truth = new List<byte>();
        for (var step = 0; step < 120; step++)
        {
            var roll = random.Next(100);
            if (roll < 70 || truth.Count == 0)
            {
                // Appends of tar-like and log-like sizes, sometimes random bytes, sometimes repetitive text.
                var bytes = new byte[random.Next(4) == 0 ? random.Next(1, 300_000) : random.Next(1, 12_000)];
                if (random.Next(2) == 0)
                {
                    random.NextBytes(bytes);
                }
                else
                {
                    bytes.AsSpan().Fill((byte)('a' + step % 26));
                }

                shadow.Write(truth.Count, bytes);
                truth.AddRange(bytes);
            }
            else if (roll < 88)
            {
                var offset = random.Next(truth.Count);
                var bytes = new byte[Math.Min(random.Next(1, 5000), truth.Count - offset + random.Next(0, 100))];
                random.NextBytes(bytes);
                shadow.Write(offset, bytes);
                while (truth.Count < offset + bytes.Length)
                {
                    truth.Add(0);
                }

                for (var i = 0; i < bytes.Length; i++)
                {
                    truth[offset + i] = bytes[i];
                }
            }
            else
            {
                var size = random.Next(truth.Count + 1);
                shadow.Truncate(size);
                truth.RemoveRange(size, truth.Count - size);
            }

            if (random.Next(3) == 0)
            {
                continue; // several changes between two stores
            }

            var incremental = shadow.Store(writer);
            var fromScratch = FileShadow.Of(truth.ToArray(), [(0L, (long)truth.Count)]).Store(writer);
            Assert.Equal(truth.Count, incremental.Size);
            Assert.Equal(fromScratch.ContentId, incremental.ContentId);
            Assert.Equal(fromScratch.Extents, incremental.Extents);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Copies_stored_through_one_kept_content_equal_copies_stored_each_through_a_new_one(int seed)
    {
        // The recorder builds every copy's state in one ChunkedContent it keeps (Restart): two growing files stored in
        // turn through it must give what each gives through a content of its own (nothing of one file's chunks left
        // in the other's state), and the same blob rows.
        var random = new Random(seed);
        using var kept = TraceWriter.Open(_dir.Sub($"k{seed}"));
        using var own = TraceWriter.Open(_dir.Sub($"o{seed}"));
        var scratch = new ChunkedContent(kept);
        var shadows = new[] { (Kept: FileShadow.Empty(), Own: FileShadow.Empty()), (Kept: FileShadow.Empty(), Own: FileShadow.Empty()) };
        for (var step = 0; step < 40; step++)
        {
            var (a, b) = shadows[step % 2];
            var bytes = new byte[random.Next(2) == 0 ? random.Next(1, 12_000) : random.Next(20_000, 200_000)];
            random.NextBytes(bytes);
            a.Write(a.Size, bytes);
            b.Write(b.Size, bytes);
            var viaKept = a.Store(kept, scratch);
            var viaOwn = b.Store(own);
            Assert.Equal(viaOwn.ContentId, viaKept.ContentId);
            Assert.Equal(viaOwn.Extents, viaKept.Extents); // row ids too: both writers stored the same blobs in order
            Assert.Equal(viaOwn.StoredBytes, viaKept.StoredBytes);
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Only_written_ranges_of_a_sparse_file_are_stored_as_data_and_incremental_equals_from_scratch(int seed)
    {
        // Writes far past the end (some of zeros), truncates up and down and punched holes (what `truncate -s 4M f;
        // printf end >> f` and fallocate do): the stored extents must cover exactly the bytes written and still
        // there, zeros a program wrote included, as a read with SEEK_DATA would.
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"s{seed}"));
        var shadow = FileShadow.Empty();
        var file = new TrueFile();
        for (var step = 0; step < 60; step++)
        {
            var roll = random.Next(8);
            if (roll < 2)
            {
                var size = roll == 0 ? file.Count + random.Next(0, 3 << 20) : random.Next(file.Count + 1);
                shadow.Truncate(size);
                file.Resize(size);
            }
            else if (roll == 2 && file.Count > 0)
            {
                var offset = random.Next(file.Count);
                var length = random.Next(1, 40_000);
                shadow.Punch(offset, length);
                file.Punch(offset, length);
            }
            else
            {
                var offset = random.Next(0, file.Count + (1 << 20));
                var bytes = new byte[random.Next(1, 9000)];
                if (random.Next(3) > 0)
                {
                    random.NextBytes(bytes); // else zeros, which are data too
                }

                shadow.Write(offset, bytes);
                file.Write(offset, bytes);
            }

            var ranges = file.DataRanges();
            var incremental = shadow.Store(writer);
            var fromScratch = FileShadow.Of(file.ToArray(), ranges).Store(writer);
            Assert.Equal(fromScratch.ContentId, incremental.ContentId);
            Assert.Equal(fromScratch.Extents, incremental.Extents);
            Assert.True(ExtentMap.TryDecode(incremental.Extents, file.Count, out var extents));
            Assert.Equal(ranges, extents.Select(e => (e.Offset, e.Offset + e.Length)).Aggregate(new List<(long, long)>(), (merged, r) =>
            {
                if (merged.Count > 0 && merged[^1].Item2 == r.Item1)
                {
                    merged[^1] = (merged[^1].Item1, r.Item2);
                }
                else
                {
                    merged.Add(r);
                }

                return merged;
            }));
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void A_small_file_stored_in_one_piece_equals_the_general_path(int seed)
    {
        // Below the least chunk a copy is stored without ChunkedContent's lists (FileShadow.Store's first branch):
        // its map and content id must be what cutting and storing the same bytes the general way gives, as lists
        // encode them, also when the file grows past the least chunk and continues the small store's hash.
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"s{seed}"));
        var shadow = FileShadow.Empty();
        var truth = new List<byte>();
        for (var step = 0; step < 80; step++)
        {
            var roll = random.Next(100);
            if (roll < 75 || truth.Count == 0)
            {
                var bytes = new byte[random.Next(1, random.Next(5) == 0 ? 9_000 : 700)];
                random.NextBytes(bytes);
                shadow.Write(truth.Count, bytes);
                truth.AddRange(bytes);
            }
            else if (roll < 90)
            {
                var offset = random.Next(truth.Count);
                var bytes = new byte[Math.Min(random.Next(1, 300), truth.Count - offset)];
                random.NextBytes(bytes);
                shadow.Write(offset, bytes);
                for (var i = 0; i < bytes.Length; i++)
                {
                    truth[offset + i] = bytes[i];
                }
            }
            else
            {
                var size = random.Next(truth.Count + 1);
                shadow.Truncate(size);
                truth.RemoveRange(size, truth.Count - size);
            }

            var stored = shadow.Store(writer);
            var data = truth.ToArray();
            var general = new ChunkedContent(writer);
            var none = GrowingTail.None;
            if (data.Length > 0)
            {
                general.StoreRange(data, 0, data.Length, ref none);
            }

            Assert.Equal(ExtentMap.Encode(general.Chunks.Select(c => c.Extent).ToList()), stored.Extents);
            Assert.Equal(ExtentMap.ContentId(general.Chunks.Select(c => (c.Extent.Offset, c.Extent.Length, c.Id)).ToList(), data.Length), stored.ContentId);
            Assert.Equal(data.Length, stored.Size);
        }

        writer.Commit();
    }

    [Fact]
    public void Zeros_a_program_wrote_are_data_and_a_punched_hole_is_a_hole()
    {
        using var writer = TraceWriter.Open(_dir.Sub("z"));
        var shadow = FileShadow.Empty();
        shadow.Write(0, new byte[3 * 4096]); // zeros written: data, as the file system allocates them
        shadow.Truncate(8 * 4096); // a hole at the end
        Assert.True(ExtentMap.TryDecode(shadow.Store(writer).Extents, 8 * 4096, out var extents));
        Assert.Equal(new[] { (0L, 3L * 4096) }, extents.Select(e => (e.Offset, e.Offset + e.Length)));

        shadow.Write(5 * 4096, [1, 2, 3]);
        shadow.Punch(4096, 4096);
        Assert.True(ExtentMap.TryDecode(shadow.Store(writer).Extents, 8 * 4096, out extents));
        Assert.Equal(new[] { (0L, 4096L), (2L * 4096, 3L * 4096), (5L * 4096, 5L * 4096 + 3) }, extents.Select(e => (e.Offset, e.Offset + e.Length)));
    }

    [Fact]
    public void A_file_appended_to_in_small_writes_stores_each_byte_once_however_many_versions_it_makes()
    {
        // tar extracting a file, a log: every write an exact version. Each version's tail chunk is the previous one
        // grown, so it goes to the writer's group as a slice from the same start (docs/store-format.md, "Groups
        // written while recording"): the group holds each byte once, and every version reads back.
        var trace = _dir.Sub("a");
        var random = new Random(7);
        var truth = new byte[300_000];
        random.NextBytes(truth);
        var versions = new List<(byte[] Extents, int Size)>();
        using (var writer = TraceWriter.Open(trace))
        {
            var shadow = FileShadow.Empty();
            for (var size = 0; size < truth.Length;)
            {
                var n = Math.Min(truth.Length - size, random.Next(500, 10_241));
                shadow.Write(size, truth.AsSpan(size, n));
                size += n;
                versions.Add((shadow.Store(writer).Extents, size));
            }

            writer.Commit();
        }

        using var r = TraceReader.Open(trace);
        var blobs = r.AllBlobs().ToList();
        Assert.DoesNotContain(blobs, b => b.Codec is Storage.Packs.BlobCodec.Raw or Storage.Packs.BlobCodec.Zstd);
        var groups = blobs.Where(b => b.Codec == Storage.Packs.BlobCodec.Group).ToList();
        Assert.Single(groups);
        Assert.InRange(groups[0].RawLength, truth.Length, truth.Length + 16); // 16: the trailer a group equal to its longest member gets
        AssertPrefixes(r, versions, truth);
    }

    [Fact]
    public void A_file_growing_from_below_the_least_chunk_hashes_each_written_byte_once()
    {
        // tar writes 10 KiB at a time: a file's first states are below the least chunk (stored whole, one chunk),
        // the next ones above it (cut). Each state hashes only the bytes written since the last (plus its content id's
        // few records), on either side of the least chunk and across it, and equals the same bytes stored from scratch.
        using var writer = TraceWriter.Open(_dir.Sub("h"));
        var random = new Random(11);
        var truth = new byte[90_000];
        random.NextBytes(truth);
        var shadow = FileShadow.Empty();
        shadow.Write(0, truth.AsSpan(0, 5_000)); // in native memory from the first state (4 KiB and more)
        var first = Storage.Codecs.Sha256.HashedOnThisThread;
        shadow.Store(writer);
        Assert.InRange(Storage.Codecs.Sha256.HashedOnThisThread - first, 5_000, 5_000 + 256);
        var size = 5_000;
        foreach (var piece in new[] { 5_240, 3_000, 10_240, 10_240, 10_240, 46_040 })
        {
            shadow.Write(size, truth.AsSpan(size, piece));
            size += piece;
            var before = Storage.Codecs.Sha256.HashedOnThisThread;
            var stored = shadow.Store(writer);
            Assert.InRange(Storage.Codecs.Sha256.HashedOnThisThread - before, piece, piece + 256);

            var general = new ChunkedContent(writer);
            var none = GrowingTail.None;
            general.StoreRange(truth.AsMemory(0, size), 0, size, ref none);
            Assert.Equal(general.Finish(size).ContentId, stored.ContentId);
            Assert.Equal(ExtentMap.Encode(general.Chunks.Select(c => c.Extent).ToList()), stored.Extents);
        }

        writer.Commit();
    }

    [Fact]
    public void A_second_copy_of_a_file_written_in_other_pieces_adds_no_bytes_to_a_group()
    {
        // tar extracting the same header twice: the copies' writes fall at other offsets, so the second copy's
        // intermediate states are new blobs, but its last state is the first copy's. Those states then become slices
        // of the first copy's bytes, and the second copy costs the group nothing.
        var trace = _dir.Sub("c");
        var random = new Random(11);
        var truth = new byte[40_000];
        random.NextBytes(truth);
        var versions = new List<(byte[] Extents, int Size)>();
        using (var writer = TraceWriter.Open(trace))
        {
            foreach (var piece in new[] { 10_240, 7_000 })
            {
                var shadow = FileShadow.Empty();
                for (var size = 0; size < truth.Length;)
                {
                    var n = Math.Min(truth.Length - size, piece);
                    shadow.Write(size, truth.AsSpan(size, n));
                    size += n;
                    versions.Add((shadow.Store(writer).Extents, size));
                }

                writer.Commit(); // the copies in two groups, as when a commit falls between them
            }
        }

        using var r = TraceReader.Open(trace);
        var blobs = r.AllBlobs().ToList();
        var group = Assert.Single(blobs, b => b.Codec == Storage.Packs.BlobCodec.Group);
        Assert.InRange(group.RawLength, truth.Length, truth.Length + 16);
        AssertPrefixes(r, versions, truth);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void A_store_with_no_change_since_the_last_gives_its_content_again_and_the_cost_of_cutting_it_again(int seed)
    {
        // tar's chmod after it wrote a file: a version of the same bytes. It is the last store's content (not cut and
        // hashed again), with nothing new stored, and the exact-version budget is charged what a store that did cut
        // them again reports: a write of nothing at the end forces that store here. Every change (appends, writes past
        // the end, overwrites in place of the same size, truncates down and up, punched holes) ends that: each store
        // after one is what a fresh copy of the true bytes stores.
        var random = new Random(seed);
        using var writer = TraceWriter.Open(_dir.Sub($"u{seed}"));
        var shadow = FileShadow.Empty();
        var file = new TrueFile();
        for (var step = 0; step < 60; step++)
        {
            var roll = random.Next(10);
            if (roll < 2 && file.Count > 0)
            {
                // In place, the size unchanged.
                var offset = random.Next(file.Count);
                var bytes = new byte[random.Next(1, Math.Min(5000, file.Count - offset) + 1)];
                random.NextBytes(bytes);
                Write(offset, bytes);
            }
            else if (roll == 2)
            {
                var size = random.Next(2) == 0 ? random.Next(file.Count + 1) : file.Count + random.Next(1, 100_000);
                shadow.Truncate(size);
                file.Resize(size);
            }
            else if (roll == 3 && file.Count > 0)
            {
                var offset = random.Next(file.Count);
                var length = random.Next(1, 40_000);
                shadow.Punch(offset, length);
                file.Punch(offset, length);
            }
            else
            {
                var bytes = new byte[random.Next(3) == 0 ? random.Next(1, 200_000) : random.Next(1, 12_000)];
                random.NextBytes(bytes);
                Write(random.Next(4) == 0 ? file.Count + random.Next(0, 70_000) : file.Count, bytes);
            }

            var first = shadow.Store(writer);
            var fresh = FileShadow.Of(file.ToArray(), file.DataRanges()).Store(writer);
            Assert.Equal(file.Count, first.Size);
            Assert.Equal(fresh.ContentId, first.ContentId);
            Assert.Equal(fresh.Extents, first.Extents);
            var again = shadow.Store(writer);
            var againCost = shadow.LastStoreCost;
            Assert.Same(first, again);
            Assert.Equal(0, again.StoredBytes);
            shadow.Write(file.Count, []);
            var recut = shadow.Store(writer);
            Assert.Equal(recut.ContentId, again.ContentId);
            Assert.Equal(recut.Extents, again.Extents);
            Assert.Equal(0, recut.StoredBytes);
            Assert.Equal(shadow.LastStoreCost, againCost);
        }

        void Write(long offset, byte[] bytes)
        {
            shadow.Write(offset, bytes);
            file.Write(offset, bytes);
        }

        var empty = FileShadow.Empty();
        Assert.Same(empty.Store(writer), empty.Store(writer));
        Assert.Equal(0, empty.LastStoreCost);
    }

    /// <summary>
    /// What a file holds after writes, truncates and punched holes, as the tests' truth: its bytes, and which of them
    /// are data (written and still there, zeros a program wrote included) as a read with SEEK_DATA would see.
    /// </summary>
    private sealed class TrueFile
    {
        private readonly List<byte> _bytes = [];
        private readonly List<bool> _written = [];

        public int Count => _bytes.Count;

        public byte[] ToArray() => [.. _bytes];

        public void Write(long offset, byte[] bytes)
        {
            Resize(Math.Max(_bytes.Count, (int)offset + bytes.Length));
            bytes.CopyTo(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_bytes)[(int)offset..]);
            System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_written).Slice((int)offset, bytes.Length).Fill(true);
        }

        public void Resize(int size)
        {
            if (size < _bytes.Count)
            {
                _bytes.RemoveRange(size, _bytes.Count - size);
                _written.RemoveRange(size, _written.Count - size);
            }

            _bytes.AddRange(new byte[size - _bytes.Count]);
            _written.AddRange(new bool[size - _written.Count]);
        }

        public void Punch(int offset, int length)
        {
            for (var i = offset; i < Math.Min(_bytes.Count, offset + length); i++)
            {
                _bytes[i] = 0;
                _written[i] = false;
            }
        }

        public List<(long, long)> DataRanges()
        {
            var ranges = new List<(long, long)>();
            for (var i = 0; i < _written.Count; i++)
            {
                if (_written[i] && (i == 0 || !_written[i - 1]))
                {
                    var end = i;
                    while (end < _written.Count && _written[end])
                    {
                        end++;
                    }

                    ranges.Add((i, end));
                }
            }

            return ranges;
        }
    }

    /// <summary>Every version (an extent map and a size) reads back as that many first bytes of <paramref name="truth"/>, and the trace verifies.</summary>
    private static void AssertPrefixes(TraceReader r, List<(byte[] Extents, int Size)> versions, byte[] truth)
    {
        foreach (var (map, size) in versions)
        {
            Assert.True(ExtentMap.TryDecode(map, size, out var extents));
            var bytes = new byte[size];
            foreach (var e in extents)
            {
                r.Blobs.Read(r.Blob(e.BlobRowId), bytes.AsSpan((int)e.Offset, e.Length));
            }

            Assert.True(bytes.AsSpan().SequenceEqual(truth.AsSpan(0, size)), $"version of {size} bytes");
        }

        Assert.True(TraceVerifier.Verify(r, readData: true).Ok);
    }
}
