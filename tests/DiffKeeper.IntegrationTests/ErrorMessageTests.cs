using System.Diagnostics;
using System.Text.RegularExpressions;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Issue 9 item 4: no user ever sees a resource key or a .NET type name. Every anticipated failure of every command
/// (collected from the options in src/DiffKeeper.Cli/Commands) prints exactly one line, `diffkeeper: ` and a
/// sentence of ours, and exits with the code README's table documents for it.
/// </summary>
public sealed partial class ErrorMessageTests(ErrorMessageTests.Fixture fixture) : IClassFixture<ErrorMessageTests.Fixture>
{
    /// <summary>Placeholders: {trace} a small recorded trace anyone may read but only root write; {secret} a trace
    /// only root may read; {missing} a path that does not exist; {file} a regular file; {fifo} a FIFO; {ro} a
    /// directory no one but root may write; {work} the non-empty recorded directory; {fresh} a new path per case.</summary>
    private static readonly Dictionary<string, (string[] Args, int Code, bool AsNobody)> Table = new()
    {
        // No trace there (3), for every command that reads one; gc and prune must not create one.
        ["timeline, missing trace"] = (["timeline", "--trace", "{missing}"], 3, false),
        ["export, missing trace"] = (["export", "--trace", "{missing}", "--out", "{fresh}"], 3, false),
        ["log, missing trace"] = (["log", "--trace", "{missing}", "a.txt"], 3, false),
        ["show, missing trace"] = (["show", "--trace", "{missing}", "a.txt"], 3, false),
        ["verify, missing trace"] = (["verify", "--trace", "{missing}"], 3, false),
        ["sessions, missing trace"] = (["sessions", "--trace", "{missing}"], 3, false),
        ["stats, missing trace"] = (["stats", "--trace", "{missing}"], 3, false),
        ["gc, missing trace"] = (["gc", "--trace", "{missing}"], 3, false),
        ["prune, missing trace"] = (["prune", "--trace", "{missing}", "--keep-last", "1"], 3, false),
        ["diff, missing trace"] = (["diff", "--trace", "{missing}"], 3, false),
        ["ls, missing trace"] = (["ls", "--trace", "{missing}"], 3, false),
        ["timeline, trace is a file"] = (["timeline", "--trace", "{file}"], 3, false),
        ["timeline, trace is a FIFO"] = (["timeline", "--trace", "{fifo}"], 3, false),
        ["verify, trace is the catalog file"] = (["verify", "--trace", "{trace}/catalog.db"], 3, false),

        // Permission and file-in-the-way failures (10), as an unprivileged user where it takes one.
        ["timeline, unreadable trace"] = (["timeline", "--trace", "{secret}"], 10, true),
        ["export, unreadable trace"] = (["export", "--trace", "{secret}", "--out", "{fresh}"], 10, true),
        ["show, unreadable pack"] = (["show", "--trace", "{trace}", "a.txt"], 10, true),
        ["record, trace not writable"] = (["record", "-q", "--capture", "inotify", "--trace", "{trace}", "--", "true"], 10, true),
        ["record, new trace in a read-only directory"] = (["record", "-q", "--capture", "inotify", "--trace", "{ro}/t", "--", "true"], 10, true),
        ["gc, trace not writable"] = (["gc", "--trace", "{trace}"], 10, true),
        ["export into a read-only directory"] = (["export", "--trace", "{readable}", "--out", "{ro}/out"], 10, true),
        ["export below a file"] = (["export", "--trace", "{trace}", "--out", "{file}/out"], 10, false),
        ["record, trace is a file"] = (["record", "-q", "--capture", "inotify", "--trace", "{file}", "--", "true"], 10, false),
        ["run, state directory is a file"] = (["run", "--state-dir", "{file}", "--store", "{fresh}", "--metrics-addr", "none", "--", "true"], 10, false),
        ["run, store is a file"] = (["run", "--state-dir", "{fresh}", "--store", "{file}", "--metrics-addr", "none", "--", "true"], 10, false),

        // --out in the way (6).
        ["export, out is a file"] = (["export", "--trace", "{trace}", "--out", "{file}"], 6, false),
        ["export, out is a FIFO"] = (["export", "--trace", "{trace}", "--out", "{fifo}"], 6, false),
        ["export, out not empty"] = (["export", "--trace", "{trace}", "--out", "{work}"], 6, false),

        // Not in the trace (8).
        ["timeline, no such session"] = (["timeline", "--trace", "{trace}", "--session", "99"], 8, false),
        ["show, never seen"] = (["show", "--trace", "{trace}", "nothere.txt"], 8, false),
        ["log, never seen"] = (["log", "--trace", "{trace}", "nothere.txt"], 8, false),
        ["diff, no session to compare against"] = (["diff", "--trace", "{trace}", "--against", "99"], 8, false),
        ["diff, no such event"] = (["diff", "--trace", "{trace}", "--to", "#99"], 8, false),
        ["ls, no such path"] = (["ls", "--trace", "{trace}", "nothere.txt"], 8, false),
        ["ls, no such event"] = (["ls", "--trace", "{trace}", "--time", "#99"], 8, false),
        ["export, no such event"] = (["export", "--trace", "{trace}", "--time", "#99", "--out", "{fresh}"], 8, false),

        // The recorded command cannot run (127, 126).
        ["record, command not found"] = (["record", "-q", "--capture", "inotify", "--trace", "{fresh}", "--", "definitely-not-a-command-dk"], 127, false),
        ["record, command not executable"] = (["record", "-q", "--capture", "inotify", "--trace", "{fresh}", "--", "{file}"], 126, false),
        ["record, command is a directory"] = (["record", "-q", "--capture", "inotify", "--trace", "{fresh}", "--", "{work}"], 126, false),
        ["record, command is a FIFO"] = (["record", "-q", "--capture", "inotify", "--trace", "{fresh}", "--", "{fifo}"], 126, false),

        // Bad option values of every typed option, and bad command lines (2).
        ["--session not a number"] = (["timeline", "--trace", "{trace}", "--session", "abc"], 2, false),
        ["--session too big"] = (["timeline", "--trace", "{trace}", "--session", "99999999999999999999"], 2, false),
        ["--session without a value"] = (["timeline", "--trace", "{trace}", "--session"], 2, false),
        ["--since not a time"] = (["timeline", "--trace", "{trace}", "--since", "soon"], 2, false),
        ["--until not a time"] = (["timeline", "--trace", "{trace}", "--until", "#x"], 2, false),
        ["export --time not a time"] = (["export", "--trace", "{trace}", "--time", "yesterday", "--out", "{fresh}"], 2, false),
        ["show --time not a time"] = (["show", "--trace", "{trace}", "--time", "1.5 s", "a.txt"], 2, false),
        ["diff --from not a time"] = (["diff", "--trace", "{trace}", "--from", "earlier"], 2, false),
        ["diff --against not a number"] = (["diff", "--trace", "{trace}", "--against", "last"], 2, false),
        ["diff --against with --from"] = (["diff", "--trace", "{trace}", "--against", "1", "--from", "1s"], 2, false),
        ["diff --time without --against"] = (["diff", "--trace", "{trace}", "--time", "1s"], 2, false),
        ["diff --stat with --json"] = (["diff", "--trace", "{trace}", "--stat", "--json"], 2, false),
        ["ls --time not a time"] = (["ls", "--trace", "{trace}", "--time", "noon"], 2, false),
        ["ls with two paths"] = (["ls", "--trace", "{trace}", "a.txt", "b.txt"], 2, false),
        ["export --include without a glob"] = (["export", "--trace", "{trace}", "--out", "{fresh}", "--include"], 2, false),
        ["--top not a number"] = (["stats", "--trace", "{trace}", "--top", "ten"], 2, false),
        ["--top negative"] = (["stats", "--trace", "{trace}", "--top", "-1"], 2, false),
        ["--snapshot-interval not a number"] = (["gc", "--trace", "{trace}", "--snapshot-interval", "x"], 2, false),
        ["--snapshot-interval zero"] = (["gc", "--trace", "{trace}", "--snapshot-interval", "0"], 2, false),
        ["--rebuild-bound below 1"] = (["gc", "--trace", "{trace}", "--rebuild-bound", "0.5"], 2, false),
        ["--rebuild-bound not a number"] = (["gc", "--trace", "{trace}", "--rebuild-bound", "lots"], 2, false),
        ["--repack-threshold not a number"] = (["gc", "--trace", "{trace}", "--repack-threshold", "most"], 2, false),
        ["--repack-threshold above 1"] = (["gc", "--trace", "{trace}", "--repack-threshold", "1.5"], 2, false),
        ["--delta unknown"] = (["gc", "--trace", "{trace}", "--delta", "xdelta"], 2, false),
        ["--keep-last not a number"] = (["prune", "--trace", "{trace}", "--keep-last", "x"], 2, false),
        ["--keep-last zero"] = (["prune", "--trace", "{trace}", "--keep-last", "0"], 2, false),
        ["--keep-within not a duration"] = (["prune", "--trace", "{trace}", "--keep-within", "a week"], 2, false),
        ["prune without a limit"] = (["prune", "--trace", "{trace}"], 2, false),
        ["prune --session not a number"] = (["prune", "--trace", "{trace}", "--keep-last", "1", "--session", "one"], 2, false),
        ["--max-payload not a size"] = (["record", "--trace", "{fresh}", "--max-payload", "1k", "--", "true"], 2, false),
        ["--max-payload too big"] = (["record", "--trace", "{fresh}", "--max-payload", "300000", "--", "true"], 2, false),
        ["--ring-buffer not a number"] = (["record", "--trace", "{fresh}", "--ring-buffer", "z", "--", "true"], 2, false),
        ["--ring-buffer not a power of two"] = (["record", "--trace", "{fresh}", "--ring-buffer", "3", "--", "true"], 2, false),
        ["--capture unknown"] = (["record", "--trace", "{fresh}", "--capture", "strace", "--", "true"], 2, false),
        ["--watch missing"] = (["record", "--trace", "{fresh}", "--watch", "{missing}", "--", "true"], 2, false),
        ["--watch is a file"] = (["record", "--trace", "{fresh}", "--watch", "{file}", "--", "true"], 2, false),
        ["record without a command"] = (["record", "--trace", "{fresh}"], 2, false),
        ["--max-versions not a number"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--max-versions", "x", "--", "true"], 2, false),
        ["--max-versions zero"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--max-versions", "0", "--", "true"], 2, false),
        ["--flush-interval not a duration"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--flush-interval", "fast", "--", "true"], 2, false),
        ["--retain not a duration"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--retain", "x", "--", "true"], 2, false),
        ["--retention-interval too short"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--retention-interval", "1ms", "--", "true"], 2, false),
        ["--metrics-addr not an address"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store", "--metrics-addr", ":99999", "--", "true"], 2, false),
        ["--on-existing unknown"] = (["restore", "--state-dir", "{fresh}", "--store", "{trace}", "--on-existing", "maybe"], 2, false),
        ["run without --state-dir"] = (["run", "--store", "{fresh}", "--", "true"], 2, false),
        ["run, store inside the state directory"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}/store", "--", "true"], 2, false),
        ["run without an app"] = (["run", "--state-dir", "{fresh}", "--store", "{fresh}-store"], 2, false),
        ["forget on a local trace"] = (["forget", "--trace", "{trace}", "--keep-last", "1"], 2, false),
        ["forget --grace not a duration"] = (["forget", "--trace", "s3://bucket/p", "--grace", "soon"], 2, false),
        ["forget --older-than not a duration"] = (["forget", "--trace", "s3://bucket/p", "--older-than", "a month"], 2, false),
        ["forget --keep-last zero"] = (["forget", "--trace", "s3://bucket/p", "--keep-last", "0"], 2, false),
        ["forget --session with a rule"] = (["forget", "--trace", "s3://bucket/p", "--session", "1", "--keep-last", "2"], 2, false),
        ["forget --session not a number"] = (["forget", "--trace", "s3://bucket/p", "--session", "first"], 2, false),
        ["export without --out"] = (["export", "--trace", "{trace}"], 2, false),
        ["log without a path"] = (["log", "--trace", "{trace}"], 2, false),
        ["--trace twice"] = (["timeline", "--trace", "{trace}", "--trace", "{trace}"], 2, false),
        ["unknown option"] = (["timeline", "--trace", "{trace}", "--bogus"], 2, false),
        ["unexpected argument"] = (["timeline", "--trace", "{trace}", "extra"], 2, false),
        ["unknown command"] = (["frobnicate"], 2, false),
        ["unknown command with --help"] = (["frobnicate", "--help"], 2, false),
        ["restore, --store is a file"] = (["restore", "--state-dir", "{fresh}", "--store", "{file}"], 2, false),
        ["options without a command"] = (["--trace", "{trace}"], 2, false),
    };

    public static TheoryData<string> Cases => new(Table.Keys);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Every_anticipated_failure_is_one_line_of_ours_with_its_documented_exit_code(string name)
    {
        var (template, code, asNobody) = Table[name];
        if (asNobody && Libc.Geteuid() != 0)
        {
            Assert.Skip("needs root to run the case as an unprivileged user (setpriv)");
        }

        var fresh = fixture.Dir.Sub("fresh-" + Guid.NewGuid().ToString("N")[..8]);
        var args = template.Select(a => a
            .Replace("{fresh}", fresh, StringComparison.Ordinal)
            .Replace("{trace}", fixture.Trace, StringComparison.Ordinal)
            .Replace("{readable}", fixture.Trace, StringComparison.Ordinal)
            .Replace("{secret}", fixture.Secret, StringComparison.Ordinal)
            .Replace("{missing}", fixture.Dir.Sub("missing/dk"), StringComparison.Ordinal)
            .Replace("{file}", fixture.File, StringComparison.Ordinal)
            .Replace("{fifo}", fixture.Fifo, StringComparison.Ordinal)
            .Replace("{ro}", fixture.ReadOnly, StringComparison.Ordinal)
            .Replace("{work}", fixture.Work, StringComparison.Ordinal)).ToArray();

        var r = asNobody ? RunAsNobody(fixture.Work, args) : Cli.Run(fixture.Work, args);

        var lines = r.Stderr.TrimEnd('\n').Split('\n');
        var line = Assert.Single(lines);
        Assert.StartsWith("diffkeeper: ", line);
        Assert.DoesNotMatch(ResourceKey(), line);
        Assert.DoesNotContain("System.", line, StringComparison.Ordinal);
        Assert.DoesNotContain("Exception", line, StringComparison.Ordinal);
        Assert.DoesNotContain("`", line, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", line, StringComparison.Ordinal);
        Assert.True(code == r.ExitCode, $"expected exit {code}: {r}");
        Assert.False(Directory.Exists(fixture.Dir.Sub("missing")), "a command created the missing trace");
    }

    // What .NET prints instead of a message when its resource strings are stripped (IO_FileExists_Name); an
    // environment variable (DIFFKEEPER_TRACE) is all capitals and is not one.
    [GeneratedRegex(@"\b(?![A-Z0-9_]+\b)[A-Z][A-Za-z]+_[A-Za-z_]+\b")]
    private static partial Regex ResourceKey();

    [Fact]
    public void A_catalog_whose_wal_this_user_cannot_open_is_a_permission_error_not_damage()
    {
        // Another user's writer left a -wal (killed before it checkpointed) and no -shm, in a directory this user may
        // not write: SQLite cannot open the WAL index. That is a permission (10), not a damaged catalog (5).
        if (Libc.Geteuid() != 0)
        {
            Assert.Skip("needs root to run the case as an unprivileged user (setpriv)");
        }

        using var dir = new TempDir();
        var work = dir.Sub("w");
        Directory.CreateDirectory(work);
        var trace = dir.Sub("t");
        Cli.Ok(work, "record", "-q", "--capture", "inotify", "--trace", trace, "--", "sh", "-c", "echo hi > a.txt");
        foreach (var d in Directory.EnumerateDirectories(dir.Path, "*", SearchOption.AllDirectories).Prepend(dir.Path))
        {
            System.IO.File.SetUnixFileMode(d, (UnixFileMode)0x1ED); // 0755
        }

        var catalog = System.IO.Path.Combine(trace, "catalog.db");
        using (var python = Process.Start("python3", ["-c",
            "import sqlite3, os, signal, sys\n" +
            "c = sqlite3.connect(sys.argv[1]); c.execute('create table zz(x)'); c.execute('insert into zz values (1)'); c.commit()\n" +
            "os.kill(os.getpid(), signal.SIGKILL)", catalog]))
        {
            python.WaitForExit();
        }

        Assert.True(new FileInfo(catalog + "-wal").Length > 0, "the killed writer left no -wal");
        System.IO.File.Delete(catalog + "-shm");
        foreach (var f in Directory.EnumerateFiles(trace))
        {
            System.IO.File.SetUnixFileMode(f, (UnixFileMode)0x1A4); // 0644
        }

        var r = RunAsNobody(work, ["show", "--trace", trace, "a.txt"]);
        var line = Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("diffkeeper: cannot read the catalog ", line);
        Assert.True(r.ExitCode == 10, $"expected exit 10: {r}");
    }

    private static Cli.Result RunAsNobody(string cwd, string[] args)
    {
        var psi = new ProcessStartInfo("setpriv")
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in (string[])["--reuid=65534", "--regid=65534", "--clear-groups", Cli.Executable, .. args])
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove("DIFFKEEPER_TRACE");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(1)), $"diffkeeper {string.Join(' ', args)} as nobody did not finish");
        return new Cli.Result(p.ExitCode, stdout.Result, stderr.Result, []);
    }

    /// <summary>One recorded trace and the odd files the cases point at, made once for the whole table.</summary>
    public sealed class Fixture : IDisposable
    {
        public Fixture()
        {
            Directory.CreateDirectory(Work);
            System.IO.File.WriteAllText(System.IO.Path.Combine(Work, "a.txt"), "a\n");
            Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "true");
            Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Secret, "--", "true");

            // Anyone may read {trace} (so the unprivileged cases get past opening it) but not write it, and the
            // pack directories stay 0700 as the writer made them, so reading content is what fails.
            foreach (var d in Directory.EnumerateDirectories(Trace, "*", SearchOption.AllDirectories).Prepend(Trace).Where(d => !d.Contains("/packs/", StringComparison.Ordinal)))
            {
                System.IO.File.SetUnixFileMode(d, (UnixFileMode)0x1ED); // 0755
            }

            foreach (var f in Directory.EnumerateFiles(Trace))
            {
                System.IO.File.SetUnixFileMode(f, (UnixFileMode)0x1A4); // 0644
            }

            System.IO.File.WriteAllText(File, "not a trace, not a directory, not executable\n");
            using (var mkfifo = Process.Start("mkfifo", [Fifo]))
            {
                mkfifo.WaitForExit();
                Assert.Equal(0, mkfifo.ExitCode);
            }

            Directory.CreateDirectory(ReadOnly);
            System.IO.File.SetUnixFileMode(ReadOnly, (UnixFileMode)0x16D); // 0555
        }

        public TempDir Dir { get; } = new();

        public string Work => Dir.Sub("work");

        public string Trace => Dir.Sub("trace");

        public string Secret => Dir.Sub("secret-trace");

        public string File => Dir.Sub("file");

        public string Fifo => Dir.Sub("fifo");

        public string ReadOnly => Dir.Sub("read-only");

        public void Dispose() => Dir.Dispose();
    }
}
