using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`gc` killed with SIGKILL at random moments: the store always opens, verifies and exports every version.</summary>
public sealed class GcCrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task Gc_killed_at_random_moments_leaves_a_store_that_verifies_and_exports_every_version()
    {
        var ct = TestContext.Current.CancellationToken;
        var work = _dir.Sub("work");
        var pristine = _dir.Sub("pristine");
        Directory.CreateDirectory(work);
        var versions = new List<byte[]>();
        var rng = new Random(42);
        var content = new byte[4 << 20];
        rng.NextBytes(content);
        for (var v = 0; v < 12; v++)
        {
            for (var region = 0; v > 0 && region < 10; region++)
            {
                rng.NextBytes(content.AsSpan((region * content.Length / 10) + rng.Next(content.Length / 20), content.Length / 100));
            }

            versions.Add((byte[])content.Clone());
            await File.WriteAllBytesAsync(Path.Combine(work, "state.bin"), content, ct);
            Cli.Ok(work, "record", "--trace", pristine, "--watch", work, "--no-compact", "--", "true");
        }

        // How long an undisturbed gc takes, to spread the kills over it.
        var timing = _dir.Sub("timing");
        StoreFiles.CopyDirectory(pristine, timing);
        var clock = Stopwatch.StartNew();
        Cli.Ok(_dir.Path, "gc", "--trace", timing);
        var full = clock.Elapsed;

        var trace = _dir.Sub("trace");
        for (var i = 0; i < 6; i++)
        {
            if (Directory.Exists(trace))
            {
                Directory.Delete(trace, recursive: true);
            }

            StoreFiles.CopyDirectory(pristine, trace);
            using (var gc = Cli.Start(_dir.Path, "gc", "--trace", trace))
            {
                await Task.Delay(TimeSpan.FromMilliseconds(rng.NextDouble() * full.TotalMilliseconds), ct);
                gc.Kill(); // SIGKILL, no cleanup
                await gc.WaitForExitAsync(ct);
            }

            CheckEveryVersion(trace, versions);
        }

        // A killed gc is finished by the next one, and that one frees the bytes (12 versions: with the default
        // snapshot interval of 10, one older version would stay whole as a keyframe).
        Cli.Ok(_dir.Path, "gc", "--trace", trace, "--snapshot-interval", "12");
        CheckEveryVersion(trace, versions);
        // The bound: one whole 4 MiB version plus 11 x 4% rewritten = 8.4 MiB, against 20.4 MiB of distinct chunks.
        Assert.True(StoreFiles.PackBytes(trace) < StoreFiles.PackBytes(pristine) * 0.45, $"{StoreFiles.PackBytes(trace)} of {StoreFiles.PackBytes(pristine)} bytes left");
    }

    private void CheckEveryVersion(string trace, List<byte[]> versions)
    {
        Assert.StartsWith("ok:", Cli.Ok(_dir.Path, "verify", "--trace", trace, "--read-data").Stdout);
        var outDir = _dir.Sub("out");
        for (var s = 1; s <= versions.Count; s++)
        {
            Cli.Ok(_dir.Path, "export", "--trace", trace, "--session", $"{s}", "--out", outDir, "--force");
            Assert.True(versions[s - 1].AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(outDir, "state.bin"))), $"session {s} differs");
        }
    }
}
