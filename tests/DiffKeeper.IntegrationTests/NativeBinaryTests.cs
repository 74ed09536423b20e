using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// The published diffkeeper is one NativeAOT file: copied alone into an empty directory it records and exports,
/// runs as a user with no home, and links only libraries a Debian package provides.
/// </summary>
public sealed class NativeBinaryTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void The_binary_alone_in_a_directory_records_and_exports_without_writing_beside_itself_or_in_HOME()
    {
        var alone = _dir.Sub("alone");
        Directory.CreateDirectory(alone);
        var exe = Path.Combine(alone, "diffkeeper");
        File.Copy(Cli.Executable, exe);
        File.SetUnixFileMode(exe, File.GetUnixFileMode(Cli.Executable));
        var home = _dir.Sub("home");
        Directory.CreateDirectory(home);
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);

        var (code, _, err) = RunProcess(exe, work, home, "record", "-q", "--capture", "inotify", "--trace", _dir.Sub("t"), "--watch", work,
            "--", "sh", "-c", "echo hello > a.txt");
        Assert.True(code == 0, err);
        (code, _, err) = RunProcess(exe, work, home, "export", "--trace", _dir.Sub("t"), "--out", _dir.Sub("out"));
        Assert.True(code == 0, err);
        Assert.Equal("hello\n", File.ReadAllText(Path.Combine(_dir.Sub("out"), "a.txt")));

        Assert.Equal(["diffkeeper"], Directory.GetFileSystemEntries(alone).Select(Path.GetFileName));
        Assert.Empty(Directory.GetFileSystemEntries(home)); // nothing unpacked into $HOME/.net or anywhere else
    }

    [Fact]
    public void Help_runs_as_an_unprivileged_user_whose_HOME_does_not_exist()
    {
        if (Environment.UserName != "root")
        {
            Assert.Skip("needs root to switch to an unprivileged user (setpriv)");
        }

        // The binary must be reachable by nobody: copy it to a directory every user can enter.
        var exe = Path.Combine(_dir.Path, "diffkeeper");
        File.Copy(Cli.Executable, exe);
        File.SetUnixFileMode(exe, (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(_dir.Path, (UnixFileMode)0b111_101_101);
        foreach (var args in new[] { "--help", "--version" })
        {
            var (code, stdout, stderr) = RunProcess("setpriv", "/", null,
                "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/nonexistent", exe, args);
            Assert.True(code == 0, $"{args}: exit {code}\n{stderr}");
            Assert.NotEmpty(stdout);
            Assert.Empty(stderr);
        }
    }

    [Fact]
    public void A_new_trace_records_the_version_the_binary_prints()
    {
        var work = _dir.Sub("w");
        Directory.CreateDirectory(work);
        var trace = _dir.Sub("t");
        Cli.Ok(_dir.Path, "record", "-q", "--capture", "scan", "--trace", trace, "--watch", work, "--", "true");
        var printed = Cli.Ok(_dir.Path, "--version").Stdout.Trim().Split('+')[0];
        using var db = DiffKeeper.Storage.Catalog.SqliteDatabase.Open(Path.Combine(trace, "catalog.db"), readOnly: true);
        using var q = db.Prepare("SELECT value FROM meta WHERE key = 'created_by'");
        Assert.True(q.Step());
        Assert.Equal("diffkeeper " + printed, q.String(0));
    }

    [Fact]
    public void Every_library_the_binary_links_comes_from_a_Debian_package()
    {
        var (code, stdout, stderr) = RunProcess("ldd", "/", null, Cli.Executable);
        Assert.True(code == 0, stderr);
        var paths = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Trim())
            .Where(l => !l.StartsWith("linux-vdso", StringComparison.Ordinal))
            .Select(l => l.Contains("=>", StringComparison.Ordinal) ? l.Split("=>")[1].Trim().Split(' ')[0] : l.Split(' ')[0])
            .ToList();
        Assert.NotEmpty(paths);
        foreach (var lib in paths)
        {
            Assert.DoesNotContain("not found", lib, StringComparison.Ordinal);
            var real = new FileInfo(lib).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? lib;
            var owner = RunProcess("dpkg", "/", null, "-S", real);
            if (owner.Code != 0)
            {
                // dpkg knows merged-/usr paths by either name.
                owner = RunProcess("dpkg", "/", null, "-S", real.StartsWith("/usr/", StringComparison.Ordinal) ? real[4..] : "/usr" + real);
            }

            Assert.True(owner.Code == 0, $"{lib} ({real}) belongs to no Debian package:\n{stdout}");
        }
    }

    private static (int Code, string Stdout, string Stderr) RunProcess(string file, string cwd, string? home, params string[] args)
    {
        var psi = new ProcessStartInfo(file)
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        if (home is not null)
        {
            psi.Environment["HOME"] = home;
        }

        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr);
    }
}
