using System.Diagnostics;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 13 item 5: recording into a real 20 MiB tmpfs while the command writes 60 MB and exits 42. The command runs
/// to its end and `record` exits with its code; one line says what could not be stored; the session gets LOST and
/// EXIT and is finished; the uncommitted pack bytes are cut back (the disk is not left full); the trace verifies.
/// </summary>
public sealed class DiskFullTests : IDisposable
{
    private readonly TempDir _dir = new();
    private readonly string _mount;
    private readonly string? _skip;

    public DiskFullTests()
    {
        _mount = _dir.Sub("small");
        Directory.CreateDirectory(_mount);
        using var p = Process.Start(new ProcessStartInfo("mount", ["-t", "tmpfs", "-o", "size=20m", "tmpfs", _mount]) { RedirectStandardError = true })!;
        var err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        _skip = p.ExitCode == 0 ? null : $"cannot mount a 20 MiB tmpfs (needs root): {err.Trim()}";
    }

    public void Dispose()
    {
        if (_skip is null)
        {
            using var p = Process.Start("umount", [_mount])!;
            p.WaitForExit();
        }

        _dir.Dispose();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Recording_onto_a_full_disk_keeps_the_command_and_closes_the_session(bool fullBeforeTheCommand)
    {
        Assert.SkipWhen(_skip is not null, _skip ?? "");
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        if (fullBeforeTheCommand)
        {
            // The baseline alone does not fit.
            File.WriteAllBytes(Path.Combine(work, "before"), RandomBytes(30 << 20));
        }

        var trace = Path.Combine(_mount, "trace");
        var r = Cli.Run(_dir.Path, "record", "-q", "--capture", "inotify", "--trace", trace, "--watch", work, "--",
            "sh", "-c", $"cd '{work}'; for i in 1 2 3 4 5 6; do head -c 10000000 /dev/urandom > f$i; done; echo done > marker; exit 42");
        Assert.True(r.ExitCode == 42, r.ToString());
        Assert.True(File.Exists(Path.Combine(work, "marker")), "the command did not run to its end");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1 && lines[0].StartsWith("diffkeeper: cannot store more of this recording: no space left on the device", StringComparison.Ordinal), r.ToString());

        var timeline = Cli.Ok(_dir.Path, "timeline", "--trace", trace).Lines;
        Assert.Contains(timeline, l => l.Contains("LOST", StringComparison.Ordinal) && l.Contains("no space left", StringComparison.Ordinal));
        Assert.Contains(timeline, l => l.Contains("EXIT", StringComparison.Ordinal) && l.Contains("exit status 42", StringComparison.Ordinal));
        Assert.Contains("exit status 42", Cli.Ok(_dir.Path, "sessions", "--trace", trace).Stdout, StringComparison.Ordinal);

        // Uncommitted pack bytes were cut back: the pack files hold exactly what the catalog committed (how much that
        // is depends on how many commits the load let through before the disk filled).
        long committed;
        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true))
        using (var sum = db.Prepare("SELECT coalesce(sum(committed_size), 0) FROM packs"))
        {
            committed = sum.ScalarInt64() ?? 0;
        }

        Assert.Equal(committed, StoreFiles.PackBytes(trace));
        Cli.Ok(_dir.Path, "verify", "--read-data", "--trace", trace);
        Cli.Ok(_dir.Path, "export", "--trace", trace, "--out", _dir.Sub("out"));
    }

    private static byte[] RandomBytes(int n)
    {
        var b = new byte[n];
        new Random(13).NextBytes(b);
        return b;
    }
}
