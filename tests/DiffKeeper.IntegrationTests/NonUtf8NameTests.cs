using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// Names are bytes (issue 10): a name that is not UTF-8, in the baseline or made while recording, is recorded
/// under its exact bytes, exported with them, shown escaped by timeline, log and ls, and given exactly by --json.
/// </summary>
public sealed class NonUtf8NameTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static int Sh(string cwd, string script)
    {
        var psi = new ProcessStartInfo("sh") { WorkingDirectory = cwd, UseShellExecute = false };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(script);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode;
    }

    /// <summary>
    /// The runtime decodes argv as UTF-8 with replacement: `--watch` of a directory whose name is not UTF-8 named
    /// nothing ("no such directory"), and the recorded command got U+FFFD's bytes in place of its own.
    /// </summary>
    [Fact]
    public void A_watched_directory_and_command_arguments_that_are_not_UTF8_keep_their_bytes()
    {
        Directory.CreateDirectory(Work);
        Assert.Equal(0, Sh(Work, "mkdir \"$(printf 'w\\377d')\""));
        var script = _dir.Sub("run.sh");
        File.WriteAllText(script, $"d=$(printf 'w\\377d')\nexec '{Cli.Executable}' record -q --capture inotify --trace '{Trace}' --watch \"$d\" -- sh -c 'printf x > \"$1/f\"' sh \"$d\"\n");
        Assert.Equal(0, Sh(Work, "sh " + script));

        // The command wrote through the exact name it was given, and the directory it lies in was the one recorded.
        Assert.Equal(0, Sh(Work, "test \"$(cat \"$(printf 'w\\377d')/f\")\" = x"));
        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace).Stdout;
        Assert.Contains("  watched: " + Work + @"/w\xffd", timeline, StringComparison.Ordinal);
        Assert.Contains(@"sh 'w\xffd'", timeline, StringComparison.Ordinal);
        Assert.Contains("CREATE   f", timeline, StringComparison.Ordinal);
        var out1 = _dir.Sub("out");
        Cli.Ok(Work, "export", "--trace", Trace, "--out", out1);
        Assert.Equal("x", File.ReadAllText(Path.Combine(out1, "f")));
    }

    [Fact]
    public void A_name_that_is_not_UTF8_is_recorded_exported_with_its_bytes_shown_escaped_and_exact_in_json()
    {
        Directory.CreateDirectory(Work);
        Assert.Equal(0, Sh(Work, "printf base > \"$(printf 'base\\376line')\""));
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c",
            "printf x > \"$(printf 'bad\\377byte')\"; mkdir \"$(printf 'd\\200ir')\"; printf yy > \"$(printf 'd\\200ir/f')\"; ln -s \"$(printf 'bad\\377byte')\" link");

        var timeline = Cli.Ok(Work, "timeline", "--trace", Trace).Stdout;
        Assert.Contains(@"CREATE   bad\xffbyte", timeline, StringComparison.Ordinal);
        Assert.Contains(@"d\x80ir/f", timeline, StringComparison.Ordinal);
        Assert.DoesNotContain("DELETE", timeline, StringComparison.Ordinal);
        Assert.DoesNotContain("\uFFFD", timeline, StringComparison.Ordinal);

        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json"));
        var created = events.Single(e => e.GetProperty("op").GetString() == "CREATE" && e.GetProperty("path").GetString() == @"bad\xffbyte");
        Assert.Equal(Convert.ToBase64String(System.Text.Encoding.Latin1.GetBytes("bad\u00ffbyte")), created.GetProperty("path_b64").GetString());
        Assert.All(events.Where(e => e.GetProperty("path").GetString() is "link"), e => Assert.False(e.TryGetProperty("path_b64", out _)));

        var ls = Cli.Ok(Work, "ls", "--trace", Trace).Stdout;
        Assert.Contains(@"  base\xfeline", ls, StringComparison.Ordinal);
        Assert.Contains(@"link -> bad\xffbyte", ls, StringComparison.Ordinal);
        var lsJson = Cli.JsonLines(Cli.Ok(Work, "ls", "--trace", Trace, "--json"));
        Assert.Equal(Convert.ToBase64String([(byte)'d', 0x80, (byte)'i', (byte)'r', (byte)'/', (byte)'f']),
            lsJson.Single(e => e.GetProperty("path").GetString() == @"d\x80ir/f").GetProperty("path_b64").GetString());
        Assert.Equal(@"bad\xffbyte", lsJson.Single(e => e.GetProperty("path").GetString() == "link").GetProperty("target").GetString());

        // log takes the display form as the path.
        Assert.Contains("versions", Cli.Ok(Work, "log", "--trace", Trace, @"d\x80ir/f").Stdout, StringComparison.Ordinal);

        foreach (var (moment, expected) in new[] { ("start", "test -f \"$(printf 'base\\376line')\" && ! test -e \"$(printf 'bad\\377byte')\""),
                                                  ("end", "test \"$(cat \"$(printf 'base\\376line')\")\" = base && test \"$(cat \"$(printf 'bad\\377byte')\")\" = x && " +
                                                          "test \"$(cat \"$(printf 'd\\200ir/f')\")\" = yy && test \"$(readlink link)\" = \"$(printf 'bad\\377byte')\" && " +
                                                          "test \"$(ls | wc -l)\" = 4") })
        {
            var output = _dir.Sub("x-" + moment);
            Cli.Ok(Work, "export", "--trace", Trace, "--time", moment, "--out", output);
            Assert.True(Sh(output, expected) == 0, $"the export at {moment} lacks the exact names: {Cli.Ok(Work, "ls", "--trace", Trace, "--time", moment)}");
        }
    }
}
