using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>Cases found in review: directory renames racing the watcher, unreadable files, nested roots.</summary>
public sealed class RenameAndPermissionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public RenameAndPermissionTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    [Fact]
    public void A_child_created_just_before_its_directory_is_renamed_appears_under_the_new_name_at_the_rename()
    {
        var r = Cli.Run(Work, "record", "--trace", Trace, "--", "sh", "-c", "mkdir d; sleep 0.1; echo hi > d/f; mv d e; sleep 0.2");
        Assert.Equal(0, r.ExitCode);
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        var rename = events.First(e => e.GetProperty("op").GetString() == "RENAME").GetProperty("seq").GetInt64();
        Assert.Equal("hi\n", Cli.Ok(Work, "show", "--trace", Trace, "e/f", "--time", $"#{rename}").Stdout);
    }

    [Fact]
    public void A_directory_renamed_before_it_could_be_watched_is_still_watched_under_its_new_name()
    {
        // perl makes and renames the directory within microseconds: the watch for "q" cannot be added in time.
        var r = Cli.Run(Work, "record", "--trace", Trace, "--", "sh", "-c",
            "perl -e 'mkdir \"q\"; rename \"q\", \"r\";'; sleep 0.3; echo z > r/z; sleep 0.3");
        Assert.Equal(0, r.ExitCode);
        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace).Lines;
        Assert.Contains(timeline, l => l.Contains("CREATE", StringComparison.Ordinal) && l.Contains("r/z", StringComparison.Ordinal) && !l.Contains("reconcile", StringComparison.Ordinal));
    }

    [Fact]
    public void Nested_watch_roots_are_refused()
    {
        Directory.CreateDirectory(Path.Combine(Work, "sub"));
        var r = Cli.Run(Work, "record", "--trace", Trace, "--watch", Work, "--watch", Path.Combine(Work, "sub"), "--", "true");
        Assert.Equal(2, r.ExitCode);
        Assert.Contains("lies inside", r.Stderr);
    }

    [Fact]
    public async Task An_unreadable_file_is_a_warning_and_record_still_exits_with_the_commands_code()
    {
        File.WriteAllText(Path.Combine(Work, "secret"), "root only");
        File.SetUnixFileMode(Path.Combine(Work, "secret"), UnixFileMode.None);
        string[] command = ["record", "--trace", Trace, "--", "sh", "-c", "echo after > visible.txt; exit 3"];
        Cli.Result r;
        if (Environment.UserName == "root")
        {
            // Root reads anything: run the recorder as nobody, on directories nobody may write.
            foreach (var d in new[] { _dir.Path, Work })
            {
                File.SetUnixFileMode(d, (UnixFileMode)0x1FF);
            }

            var bundle = _dir.Sub("bundle"); // the single-file host extracts native libraries under $HOME, which nobody cannot write
            Directory.CreateDirectory(bundle);
            File.SetUnixFileMode(bundle, (UnixFileMode)0x1FF);
            var psi = new ProcessStartInfo("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", Cli.Executable, .. command])
            {
                WorkingDirectory = Work,
                RedirectStandardError = true,
                RedirectStandardOutput = true,
            };
            psi.Environment["DOTNET_BUNDLE_EXTRACT_BASE_DIR"] = bundle;
            psi.Environment["HOME"] = bundle;
            using var p = Process.Start(psi)!;
            var ct = TestContext.Current.CancellationToken;
            var stderr = p.StandardError.ReadToEndAsync(ct);
            await p.StandardOutput.ReadToEndAsync(ct);
            await p.WaitForExitAsync(ct);
            r = new Cli.Result(p.ExitCode, "", await stderr, []);
        }
        else
        {
            r = Cli.Run(Work, command);
        }

        Assert.True(r.ExitCode == 3, r.ToString());
        Assert.Contains("secret", r.Stderr);
        Assert.Contains("not recorded", r.Stderr);
        Assert.Equal("after\n", Cli.Ok(Work, "show", "--trace", Trace, "visible.txt").Stdout);
    }
}
