using DiffKeeper.Storage.BigFiles;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// A big file that ends before its reader expected (cut shorter while it was read): the version holds what the reads
/// returned and nothing after, whichever pieces were new, unchanged or found by their fingerprint, and whichever core
/// read them; it must be the very version an ingest of the file as cut gives.
/// </summary>
public sealed class BlockIngestEndTests
{
    private const int Block = BlockPiece.BlockSize;

    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    [InlineData(4, false)]
    public void AFileThatEndsWhileReadGivesTheVersionOfTheFileAsCut(int seed, bool trustFingerprints)
    {
        using var dir = new TempDir();
        var random = new Random(seed);
        const long size = 12L << 20; // three of the ingest's 4 MiB batches
        var data = new byte[size];
        random.NextBytes(data);
        var path = dir.Sub("image");
        File.WriteAllBytes(path, data);
        var writer = TraceWriter.Open(dir.Sub("trace"));
        IReadOnlyList<BlockPiece> previous;
        try
        {
            using (var file = File.OpenHandle(path))
            {
                previous = BlockIngest.IngestFile(writer, file, size).Pieces;
            }

            for (var round = 0; round < 4; round++)
            {
                foreach (var block in Enumerable.Range(0, (int)(size / Block)).Where(_ => random.Next(5) == 0))
                {
                    random.NextBytes(data.AsSpan(block * Block + random.Next(Block / 2), random.Next(1, Block / 2))); // a part of 20% of the blocks
                }

                File.WriteAllBytes(path, data);
                var cut = random.NextInt64(size / 4, size); // anywhere: inside a piece, in any batch
                BlockIngestResult ended, asCut;
                using (var file = File.OpenHandle(path))
                {
                    ended = BlockIngest.Ingest(writer, new EndingSource(new FileBlockSource(file), cut), size, previous, size, trustFingerprints: trustFingerprints);
                }

                var cutPath = dir.Sub($"cut{round}");
                File.WriteAllBytes(cutPath, data.AsSpan(0, (int)cut).ToArray());
                using (var file = File.OpenHandle(cutPath))
                {
                    asCut = BlockIngest.IngestFile(writer, file, cut, previous, size, trustFingerprints: trustFingerprints);
                }

                Assert.Equal(cut, ended.Content.Size);
                Assert.Equal(asCut.Content.ContentId, ended.Content.ContentId);
                Assert.Equal(asCut.Content.Extents, ended.Content.Extents);
                Assert.Equal(asCut.Pieces, ended.Pieces);
                Assert.Equal(asCut.Pieces.Select(p => p.Fingerprint), ended.Pieces.Select(p => p.Fingerprint));
                Assert.Equal(cut, ended.BytesRead);
                previous = ended.Pieces;
            }

            writer.Commit();
        }
        finally
        {
            writer.Dispose();
        }

        using var reader = TraceReader.Open(dir.Sub("trace"));
        foreach (var p in previous)
        {
            var bytes = new byte[p.Length];
            reader.Blobs.Read(reader.Blob(p.RowId), bytes);
            Assert.True(bytes.AsSpan().SequenceEqual(data.AsSpan((int)p.Offset, p.Length)), $"the piece at {p.Offset} reads back other bytes");
        }
    }

    /// <summary>The file's data as it is up to <paramref name="end"/>, and nothing after: as if it were cut there while read.</summary>
    private sealed class EndingSource(IBlockSource inner, long end) : IBlockSource
    {
        public List<(long Start, long End)> DataRanges(long from, long to) => inner.DataRanges(from, to);

        public int Read(Span<byte> into, long offset) =>
            offset >= end ? 0 : inner.Read(into[..(int)Math.Min(into.Length, end - offset)], offset);
    }
}
