using System.Diagnostics;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// A closing `record` rewrites a small catalog in 1 KiB pages under a temporary name and renames it over catalog.db
/// (TraceWriter.CloseCatalog). Real faults at each step, injected into the real process by strace (a SIGKILL on
/// entry to the step's system call, or the call failing): every time the trace verifies with --read-data and keeps
/// every session, catalog.db is the old file or the new one, nothing of the copy is left once the next `record`
/// (or, for a failure, this one) is done, and the next `record` rewrites it.
/// </summary>
public sealed class CatalogRewriteCrashTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string, string, bool, int> Faults => new()
    {
        // what, strace's fault on the copy (catalog.db.resized; the last on the trace directory), killed, the catalog's page size after it
        { "kill during the copy", "pwrite64:error=EIO:signal=KILL:when=2", true, 4096 },
        { "the copy fails: disk full", "pwrite64:error=ENOSPC:when=2", false, 4096 },
        { "kill before the copy has the catalog's mode", "fchmod:error=EIO:signal=KILL", true, 4096 },
        { "the copy cannot get the catalog's mode", "fchmod:error=EPERM", false, 4096 },
        { "kill before the copy is synced", "fsync:error=EIO:signal=KILL", true, 4096 },
        { "the copy cannot be synced", "fsync:error=EIO", false, 4096 },
        { "kill before the rename", "renameat:error=EIO:signal=KILL", true, 4096 },
        { "the rename fails", "renameat:error=EIO", false, 4096 },
        { "kill before the rename, as the old WAL's unlink is synced", "fsync:signal=KILL:when=1", true, 4096 }, // on the trace directory
        { "kill after the rename, before the directory is synced", "fsync:signal=KILL:when=2", true, 1024 }, // on the trace directory
    };

    [Theory]
    [MemberData(nameof(Faults))]
    public void A_fault_while_record_rewrites_the_catalog_leaves_a_trace_that_verifies(string what, string inject, bool killed, int pageSize)
    {
        if (!File.Exists("/usr/bin/strace"))
        {
            Assert.Skip("strace is not installed (apt-get install strace): it injects the faults");
        }

        var work = _dir.Sub("work");
        var trace = _dir.Sub("trace");
        Directory.CreateDirectory(work);
        File.WriteAllText(Path.Combine(work, "a.txt"), "one");
        Cli.Ok(work, "record", "--trace", trace, "--watch", work, "--capture", "scan", "-q", "--", "sh", "-c", "echo two > a.txt");
        using (var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: false))
        {
            db.Execute("PRAGMA journal_mode=DELETE; PRAGMA page_size=4096; VACUUM; PRAGMA journal_mode=WAL;");
        }

        Assert.Equal(4096, PageSize(trace));
        var copy = Path.Combine(trace, TraceWriter.ResizedCatalog);
        var on = what.Contains("directory", StringComparison.Ordinal) ? trace : copy;
        var (code, stderr) = Strace(work, ["-f", "-qq", "-o", "/dev/null", "-P", on, "-e", "inject=" + inject,
            Cli.Executable, "record", "--trace", trace, "--watch", work, "--capture", "scan", "-q", "--", "sh", "-c", "echo three > a.txt"]);
        Assert.True(killed ? code == 128 + 9 : code == 0, $"{what}: exit {code}: {stderr}");
        if (!killed)
        {
            Assert.Empty(Directory.GetFiles(trace, TraceWriter.ResizedCatalog + "*"));
        }

        Assert.Equal(pageSize, PageSize(trace));
        Verified(work, trace, sessions: 2);

        Cli.Ok(work, "record", "--trace", trace, "--watch", work, "--capture", "scan", "-q", "--", "sh", "-c", "echo four > a.txt");
        Assert.Empty(Directory.GetFiles(trace, TraceWriter.ResizedCatalog + "*"));
        Assert.Equal(1024, PageSize(trace));
        Verified(work, trace, sessions: 3);
        var export = _dir.Sub("export");
        Cli.Ok(work, "export", "--trace", trace, "--out", export);
        Assert.Equal("four\n", File.ReadAllText(Path.Combine(export, "a.txt")));
    }

    private static void Verified(string work, string trace, int sessions)
    {
        Cli.Ok(work, "verify", "--trace", trace, "--read-data");
        Assert.Equal(sessions, Cli.Ok(work, "sessions", "--trace", trace).Lines.Length);
    }

    private static long PageSize(string trace)
    {
        using var db = SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true);
        using var q = db.Prepare("SELECT page_size FROM pragma_page_size()");
        Assert.True(q.Step());
        return q.Int64(0);
    }

    private static (int Code, string Stderr) Strace(string cwd, string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/strace") { WorkingDirectory = cwd, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stderr);
    }
}
