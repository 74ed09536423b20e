using System.Diagnostics;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Ebpf;
using DiffKeeper.Capture.Fanotify;
using DiffKeeper.Capture.Inotify;
using DiffKeeper.Core;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.Recording.Tests;

/// <summary>
/// <see cref="ICaptureSource.DrainToNowAsync"/> against the real kernel: a drain asked for right after a change
/// puts every event of it and of all changes before it in the sink (keep mode's freeze cut relies on it); a drain
/// that returned at once fails here on both backends. A backend that cannot start here is skipped with its own error.
/// </summary>
public sealed class DrainToNowTests : IDisposable
{
    private const int Rounds = 30;
    private const int PerRound = 50;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("ebpf")]
    [InlineData("fanotify")]
    public async Task A_drain_delivers_every_event_the_kernel_produced_before_it(string backend)
    {
        var root = _dir.Sub("root");
        Directory.CreateDirectory(root);
        IReadOnlyList<string> roots = [root];
        var filter = new PathFilter(roots, _dir.Sub("trace"), []);
        var channel = Channel.CreateUnbounded<CaptureEvent>();
        await using ICaptureSource source = backend == "ebpf" ? new EbpfSource(roots, filter) : new FanotifySource(roots, filter);
        Assert.True(source.DrainsToNow);
        try
        {
            source.Start(channel.Writer);
        }
        catch (DiffKeeperException e)
        {
            Assert.Skip($"{backend} cannot start here: {e.Message}");
        }

        // Rounds of a burst then a drain, the drain asked for right after the burst's last change: the sink must
        // then hold every create so far. The reader would get there on its own a little later (eBPF polls every
        // 10 ms), so a drain that did not wait for it fails at once.
        var created = new HashSet<string>();
        for (var round = 0; round < Rounds; round++)
        {
            var first = round * PerRound + 1;
            if (backend == "ebpf")
            {
                // The eBPF backend follows this process's children, never this process: a child creates the files.
                using var child = Process.Start(new ProcessStartInfo("sh",
                    ["-c", $"cd '{root}' && i={first}; while [ $i -lt {first + PerRound} ]; do : > f$i; i=$((i+1)); done"]))!;
                child.WaitForExit();
                Assert.Equal(0, child.ExitCode);
            }
            else
            {
                // fanotify sees every process: this one creates the files.
                for (var i = first; i < first + PerRound; i++)
                {
                    File.Create(Path.Combine(root, $"f{i}")).Dispose();
                }
            }

            var drained = source.DrainToNowAsync();
            Assert.Same(drained, await Task.WhenAny(drained, Task.Delay(TimeSpan.FromSeconds(10), TestContext.Current.CancellationToken)));
            while (channel.Reader.TryRead(out var e))
            {
                if (e.Kind == CaptureKind.Created)
                {
                    created.Add(e.Path);
                }
            }

            Assert.Equal(Enumerable.Range(1, first + PerRound - 1).Select(i => $"f{i}").ToHashSet(), created);
        }
    }

    [Fact]
    public async Task Inotify_says_it_cannot_drain_so_keep_mode_uses_its_barrier()
    {
        var root = _dir.Sub("root");
        Directory.CreateDirectory(root);
        await using var source = new InotifySource([root], new PathFilter([root], _dir.Sub("trace"), []));
        Assert.False(source.DrainsToNow);
        await Assert.ThrowsAsync<NotSupportedException>(source.DrainToNowAsync);
    }
}
