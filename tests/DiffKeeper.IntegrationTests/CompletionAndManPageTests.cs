using System.Diagnostics;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`completion bash|zsh|fish` and the man page, both generated from the command tree.</summary>
public sealed class CompletionAndManPageTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static (int Code, string Out, string Err) Bash(string script)
    {
        var psi = new ProcessStartInfo("bash", ["--noprofile", "--norc", "-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var o = p.StandardOutput.ReadToEndAsync();
        var e = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        return (p.ExitCode, o.Result, e.Result);
    }

    [Theory]
    [InlineData("diffkeeper tim", 1, "timeline")]
    [InlineData("diffkeeper timeline --no-f", 2, "--no-fold")]
    [InlineData("diffkeeper report --o", 2, "--out")]
    [InlineData("diffkeeper export --trace t --inc", 4, "--include")]
    public void Bash_completes_commands_and_their_options(string line, int word, string expected)
    {
        var script = _dir.Sub("completion.bash");
        File.WriteAllText(script, Cli.Ok(_dir.Path, "completion", "bash").Stdout);
        var check = Bash($"bash -n '{script}'");
        Assert.True(check.Code == 0, check.Err);
        var r = Bash($"source '{script}'; COMP_WORDS=({line}); COMP_CWORD={word}; _diffkeeper; printf '%s\\n' \"${{COMPREPLY[@]}}\"");
        Assert.True(r.Code == 0, r.Err);
        Assert.Equal([expected], r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void Zsh_and_fish_scripts_name_every_command_and_a_bad_shell_is_a_usage_error()
    {
        Assert.StartsWith("autoload -U +X bashcompinit && bashcompinit\n", Cli.Ok(_dir.Path, "completion", "zsh").Stdout, StringComparison.Ordinal);
        var fish = Cli.Ok(_dir.Path, "completion", "fish").Stdout;
        foreach (var command in new[] { "record", "timeline", "report", "diff", "export" })
        {
            Assert.Contains($"complete -c diffkeeper -n __fish_use_subcommand -a {command} -d '", fish, StringComparison.Ordinal);
        }

        Assert.Contains("complete -c diffkeeper -n '__fish_seen_subcommand_from timeline' -l no-fold -d '", fish, StringComparison.Ordinal);
        var bad = Cli.Run(_dir.Path, "completion", "tcsh");
        Assert.Equal(2, bad.ExitCode);
        Assert.StartsWith("diffkeeper: completion expects bash, zsh or fish, got 'tcsh'", bad.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public void The_man_page_describes_every_command_and_groff_renders_it_without_warnings()
    {
        var roff = Cli.Ok(_dir.Path, "man-page").Stdout;
        Assert.StartsWith(".TH DIFFKEEPER 1 ", roff, StringComparison.Ordinal);
        foreach (var command in new[] { "record", "timeline", "report", "export", "ls", "diff", "log", "show", "verify", "gc", "prune", "restore", "run" })
        {
            Assert.Contains($"\n.SS {command}", roff, StringComparison.Ordinal);
        }

        Assert.Contains("\\-\\-no\\-fold", roff, StringComparison.Ordinal);
        if (!File.Exists("/usr/bin/groff"))
        {
            Assert.Skip("groff is not installed (/usr/bin/groff): the page's roff is not rendered");
        }

        var page = _dir.Sub("diffkeeper.1");
        File.WriteAllText(page, roff);
        var r = Bash($"groff -man -Tutf8 -ww '{page}' > /dev/null");
        Assert.True(r.Code == 0 && r.Err.Length == 0, r.Err);
    }
}
