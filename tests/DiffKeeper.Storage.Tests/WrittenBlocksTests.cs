using DiffKeeper.Storage.BigFiles;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Keep mode's fast path for big files (eBPF, nothing else wrote the file): an image of only the blocks the write
/// events touched, stored over the previous version, must be the very version a copy of every data extent gives.
/// </summary>
public sealed class WrittenBlocksTests
{
    private const int Page = 4096;

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void ImageOfTheWrittenBlocksGivesTheSameVersionAsAWholeCopy(int seed)
    {
        using var dir = new TempDir();
        var random = new Random(seed);
        var path = dir.Sub("image");
        long size = 8L << 20;
        using var file = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite);
        RandomAccess.SetLength(file, size);
        for (var i = 0; i < 300; i++)
        {
            RandomAccess.Write(file, Bytes(random, Page), random.NextInt64(size / Page) * Page); // a sparse image: scattered pages
        }

        using var writer = TraceWriter.Open(dir.Sub("trace"));
        var pool = new ImageBuffers(256L << 20);
        var first = BlockIngest.IngestFile(writer, file, size);
        var previous = first.Pieces;
        var previousSize = size;
        for (var version = 1; version <= 20; version++)
        {
            var written = new List<(long Start, long End)>();
            for (var op = random.Next(1, 30); op > 0; op--)
            {
                // Pages, runs across block boundaries, unaligned bytes, the same bytes again (no change), and writes past the end.
                var length = random.Next(4) switch { 0 => Page, 1 => random.Next(1, 200_000), 2 => random.Next(1, 100), _ => 70_000 };
                var at = random.Next(8) == 0 ? size + random.Next(0, 3 * Page) : random.NextInt64(Math.Max(1, size - length));
                var bytes = random.Next(6) == 0 ? new byte[length] : Bytes(random, length);
                RandomAccess.Write(file, bytes, at);
                written.Add((at, at + length));
                size = Math.Max(size, at + length);
            }

            BlockIngestResult whole, partial;
            using (var image = FrozenImage.Take(file, size, pool)!)
            {
                whole = BlockIngest.Ingest(writer, image, image.Size, previous, previousSize);
            }

            using (var image = FrozenImage.TakeWritten(file, size, written, previousSize, pool)!)
            {
                Assert.NotNull(image.Written);
                Assert.True(image.DataBytes < whole.BytesRead, $"version {version}: the image of written blocks holds {image.DataBytes} bytes, the whole copy {whole.BytesRead}");
                partial = BlockIngest.Ingest(writer, image, image.Size, previous, previousSize, image.Written);
            }

            Assert.Equal(whole.Content.Size, partial.Content.Size);
            Assert.Equal(whole.Content.ContentId, partial.Content.ContentId);
            Assert.Equal(whole.Content.Extents, partial.Content.Extents);
            Assert.Equal(whole.Pieces, partial.Pieces);
            previous = partial.Pieces;
            previousSize = size;
        }

        writer.Commit();
    }

    private static byte[] Bytes(Random random, int length)
    {
        var b = new byte[length];
        random.NextBytes(b);
        return b;
    }
}
