using System.Diagnostics;
using System.Text;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// The progress line of export, verify, gc (and restore, which shares export's): written in place on a terminal's
/// stderr and erased at the end; not one byte of it on a redirected stderr. DIFFKEEPER_PROGRESS_DELAY_MS=0 shows it
/// from the start, so a small trace is enough.
/// </summary>
public sealed class ProgressLineTests : IDisposable
{
    private const string Clear = "\r\u001b[K";
    private readonly TempDir _dir = new();

    public ProgressLineTests()
    {
        Directory.CreateDirectory(Work);
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c",
            "mkdir -p d; for i in 1 2 3 4 5 6 7 8; do echo $i > d/f$i; done; head -c 300000 /dev/urandom > big.bin");
    }

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static (int Exit, string Stdout, string Stderr) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["DIFFKEEPER_PROGRESS_DELAY_MS"] = "0";
        psi.Environment.Remove("DIFFKEEPER_TRACE");
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"{file} {string.Join(' ', args)} did not finish");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void A_redirected_stderr_gets_no_progress()
    {
        var export = Run(Cli.Executable, "export", "--trace", Trace, "--out", _dir.Sub("out"));
        var verify = Run(Cli.Executable, "verify", "--trace", Trace, "--read-data");
        var gc = Run(Cli.Executable, "gc", "--trace", Trace);
        foreach (var (exit, stdout, stderr) in new[] { export, verify, gc })
        {
            Assert.True(exit == 0, stderr);
            Assert.DoesNotContain('\r', stderr + stdout);
            Assert.DoesNotContain('\u001b', stderr + stdout);
        }

        Assert.Equal("", gc.Stderr); // its steps used to be printed as lines; they are progress now
    }

    [Fact]
    public void A_terminal_gets_one_line_rewritten_in_place_and_erased_at_the_end()
    {
        if (!File.Exists("/usr/bin/script"))
        {
            Assert.Skip("script (util-linux) is not installed at /usr/bin/script: no pseudo-terminal to run diffkeeper on");
        }

        foreach (var (args, line) in new[]
                 {
                     ($"export --trace {Trace} --out {_dir.Sub("tty-out")}", "export: "),
                     ($"verify --trace {Trace} --read-data", "verify: "),
                     ($"gc --trace {Trace}", "gc: "),
                 })
        {
            // script gives the command a pseudo-terminal as stdin, stdout and stderr, and copies what it writes.
            var r = Run("/usr/bin/script", "-qec", $"{Cli.Executable} {args}", "/dev/null");
            Assert.True(r.Exit == 0, r.Stdout + r.Stderr);
            var screen = r.Stdout;
            Assert.Contains("\r" + line, screen, StringComparison.Ordinal);
            var last = screen.LastIndexOf("\r" + line, StringComparison.Ordinal);
            var cleared = screen.IndexOf(Clear, last + 1, StringComparison.Ordinal);
            Assert.True(cleared > last, $"the progress line is not erased at the end: {Escape(screen)}");
            Assert.DoesNotContain('\n', screen[last..cleared]);
            Assert.DoesNotContain("\u001b[?", screen, StringComparison.Ordinal); // no terminal mode changed
        }
    }

    private static string Escape(string s) => new StringBuilder(s).Replace("\r", "\\r").Replace("\u001b", "\\e").Replace("\n", "\\n").ToString();
}
