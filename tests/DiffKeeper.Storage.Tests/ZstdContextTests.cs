using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Tests;

/// <summary>
/// Compression contexts are shared by threads (<see cref="Zstd"/>): one thread after another reuses the context the
/// first made (its workspace already mapped), compressions running at once each have their own, and a context used
/// for a prefix compression compresses plainly afterwards as a fresh one would. Run alone: the count of contexts
/// created is the process's.
/// </summary>
[Collection(nameof(ZstdContextTests))]
[CollectionDefinition(nameof(ZstdContextTests), DisableParallelization = true)]
public sealed class ZstdContextTests
{
    [Fact]
    public void Threads_one_after_another_share_one_context()
    {
        var data = Text(100_000, seed: 1);
        var output = new byte[Zstd.CompressBound(data.Length)];
        Zstd.Compress(data, output); // this thread's, or one a test before left: the pool has one now
        var before = Zstd.ContextsCreated;
        for (var i = 0; i < 4; i++)
        {
            var thread = new Thread(() =>
            {
                Zstd.Compress(data, new byte[Zstd.CompressBound(data.Length)]);
                Zstd.CompressWithPrefix(data, data.AsSpan(0, 50_000), new byte[Zstd.CompressBound(data.Length)]);
            });
            thread.Start();
            thread.Join();
        }

        // At most one more: a background thread an earlier test left (a group encoder, compaction) may hold the pooled
        // context for a moment. A context per thread would be four.
        Assert.True(Zstd.ContextsCreated <= before + 1, $"four threads in turn created {Zstd.ContextsCreated - before} contexts: each made its own");
    }

    [Fact]
    public void Compressions_at_once_and_after_a_prefix_give_what_a_fresh_context_gives()
    {
        var plain = Text(200_000, seed: 2);
        var expected = new byte[Zstd.CompressBound(plain.Length)];
        var expectedLength = Zstd.Compress(plain, expected);
        var failures = 0;
        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            var source = Text(150_000, seed: 100 + i);
            var prefix = Text(120_000, seed: 100 + i);
            var delta = new byte[Zstd.CompressBound(source.Length)];
            var n = Zstd.CompressWithPrefix(source, prefix, delta);
            var back = new byte[source.Length];
            var output = new byte[Zstd.CompressBound(plain.Length)];
            var m = Zstd.Compress(plain, output);
            if (!Zstd.TryDecompressWithPrefix(delta.AsSpan(0, n), prefix, back, out _) || !back.AsSpan().SequenceEqual(source) ||
                !output.AsSpan(0, m).SequenceEqual(expected.AsSpan(0, expectedLength)))
            {
                Interlocked.Increment(ref failures);
            }
        });

        Assert.Equal(0, failures);
    }

    private static byte[] Text(int length, int seed)
    {
        var random = new Random(seed);
        var words = new[] { "record", "trace", "version", "chunk", "delta", "pack", "catalog", "blob", "export", "\n" };
        var bytes = new byte[length];
        var at = 0;
        while (at < length)
        {
            var w = System.Text.Encoding.ASCII.GetBytes(words[random.Next(words.Length)] + " ");
            var n = Math.Min(w.Length, length - at);
            w.AsSpan(0, n).CopyTo(bytes.AsSpan(at));
            at += n;
        }

        return bytes;
    }
}
