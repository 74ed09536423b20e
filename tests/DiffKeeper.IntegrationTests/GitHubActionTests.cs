using System.Diagnostics;
using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;
using YamlDotNet.RepresentationModel;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// action.yml, run as a runner would run it, minus GitHub: its `run:` steps execute with bash as a composite
/// action's `shell: bash` steps do, with their `env:` expressions resolved from the inputs (and their defaults) and
/// from earlier steps' $GITHUB_OUTPUT; `uses:` steps are not run, but the upload steps' `if:` and `with: path:`
/// are evaluated, so the test sees what would be uploaded. The build step is skipped: bin/diffkeeper (the binary
/// under test) is put on PATH instead.
/// </summary>
public sealed partial class GitHubActionTests : IDisposable
{
    private readonly TempDir _dir = new();

    public GitHubActionTests() => Directory.CreateDirectory(Workspace);

    public void Dispose() => _dir.Dispose();

    private string Workspace => _dir.Sub("workspace");

    private static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException("cannot find the repository root");
    }

    private static YamlMappingNode Action()
    {
        var stream = new YamlStream();
        using var reader = new StreamReader(Path.Combine(RepoRoot(), "action.yml"));
        stream.Load(reader);
        return (YamlMappingNode)stream.Documents[0].RootNode;
    }

    private static YamlMappingNode Map(YamlNode node, string key) => (YamlMappingNode)((YamlMappingNode)node).Children[new YamlScalarNode(key)];

    private static string? Scalar(YamlNode node, string key) =>
        ((YamlMappingNode)node).Children.TryGetValue(new YamlScalarNode(key), out var v) ? ((YamlScalarNode)v).Value : null;

    [Fact]
    public void Every_input_used_is_declared_and_every_declared_input_is_used_and_no_script_body_holds_an_expression()
    {
        var declared = Map(Action(), "inputs").Children.Keys.Select(k => ((YamlScalarNode)k).Value!).ToHashSet();
        var text = File.ReadAllText(Path.Combine(RepoRoot(), "action.yml"));
        var used = InputReference().Matches(text).Select(m => m.Groups[1].Value).ToHashSet();
        Assert.Equal(declared.Order(), used.Order());
        foreach (var step in Steps())
        {
            Assert.DoesNotContain("${{", Scalar(step, "run") ?? "", StringComparison.Ordinal);
        }

        Assert.Equal("true", Scalar(Map(Map(Action(), "inputs"), "command"), "required"));
    }

    [Fact]
    public void A_command_runs_as_written_and_the_action_exits_with_its_code_and_uploads_the_trace_it_recorded()
    {
        var run = RunAction(new() { ["command"] = "echo \"a; b\" && exit 3", ["capture"] = "inotify" });

        Assert.Equal(3, run.ExitCode);
        Assert.Contains("a; b\n", run.Stdout);
        var upload = Assert.Single(run.Uploads, u => u.Name == "Upload the trace");
        Assert.True(upload.Runs, "upload on-failure must upload when the command exits 3");
        Assert.Equal(Path.Combine(Workspace, "diffkeeper-trace"), upload.Path);
        Assert.Contains("exit status 3", Cli.Ok(Workspace, "timeline", "--trace", upload.Path).Lines[^1]);
        var report = Assert.Single(run.Uploads, u => u.Name == "Upload the report");
        Assert.True(report.Runs, "the report is uploaded with the trace");
        Assert.Equal(Path.Combine(Workspace, "diffkeeper-trace-report.html"), report.Path);
        Assert.Contains("Content-Security-Policy", File.ReadAllText(report.Path), StringComparison.Ordinal);
        var summary = File.ReadAllText(_dir.Sub("summary.md"));
        Assert.StartsWith("### DiffKeeper: the command exited 3\n", summary, StringComparison.Ordinal);
        Assert.Contains("EXIT     exit status 3", summary, StringComparison.Ordinal);
    }

    [Fact]
    public void A_command_substitution_in_single_quotes_is_not_run_and_a_passing_command_uploads_nothing_on_failure()
    {
        var marker = _dir.Sub("x");
        var run = RunAction(new() { ["command"] = $"echo '$(touch {marker})'", ["capture"] = "inotify" });

        Assert.Equal(0, run.ExitCode);
        Assert.Contains($"$(touch {marker})\n", run.Stdout);
        Assert.False(File.Exists(marker), "the command's single-quoted $(...) was expanded");
        Assert.False(run.Uploads.Single(u => u.Name == "Upload the trace").Runs);
        Assert.False(run.Uploads.Single(u => u.Name == "Upload the report").Runs);
    }

    [Fact]
    public void Report_false_writes_no_report_and_uploads_none()
    {
        var run = RunAction(new() { ["command"] = "exit 4", ["capture"] = "inotify", ["report"] = "false" });
        Assert.Equal(4, run.ExitCode);
        Assert.True(run.Uploads.Single(u => u.Name == "Upload the trace").Runs);
        Assert.False(run.Uploads.Single(u => u.Name == "Upload the report").Runs);
        Assert.False(File.Exists(Path.Combine(Workspace, "diffkeeper-trace-report.html")));
    }

    [Fact]
    public void The_trace_input_is_where_the_upload_step_looks_and_upload_always_uploads_a_passing_run()
    {
        Directory.CreateDirectory(Path.Combine(Workspace, "src"));
        var run = RunAction(new()
        {
            ["command"] = "echo built > src/out.txt",
            ["trace"] = "traces/my trace",
            ["watch"] = "src\n",
            ["upload"] = "always",
            ["capture"] = "inotify",
        });

        Assert.Equal(0, run.ExitCode);
        var upload = run.Uploads.Single(u => u.Name == "Upload the trace");
        Assert.True(upload.Runs);
        Assert.Equal(Path.Combine(Workspace, "traces", "my trace"), upload.Path);
        Assert.Equal("built\n", Cli.Ok(Workspace, "show", "--trace", upload.Path, "out.txt").Stdout);
    }

    [Fact]
    public void A_bad_upload_value_fails_the_record_step_with_an_error_annotation()
    {
        var run = RunAction(new() { ["command"] = "true", ["upload"] = "sometimes" });
        Assert.Equal(2, run.ExitCode);
        Assert.Contains("::error::", run.Stderr);
        Assert.False(Directory.Exists(Path.Combine(Workspace, "diffkeeper-trace")));
    }

    private sealed record Upload(string Name, bool Runs, string Path);

    private sealed record ActionRun(int ExitCode, string Stdout, string Stderr, List<Upload> Uploads);

    private static IEnumerable<YamlMappingNode> Steps() =>
        ((YamlSequenceNode)Map(Action(), "runs").Children[new YamlScalarNode("steps")]).Children.Cast<YamlMappingNode>();

    /// <summary>Runs the action's steps in order; a failing step ends the run with its exit code, as on a runner.</summary>
    private ActionRun RunAction(Dictionary<string, string> given)
    {
        var inputs = Map(Action(), "inputs").Children.ToDictionary(
            kv => ((YamlScalarNode)kv.Key).Value!,
            kv => given.TryGetValue(((YamlScalarNode)kv.Key).Value!, out var v) ? v : Scalar(kv.Value, "default") ?? "");
        var outputs = new Dictionary<string, Dictionary<string, string>>();
        var uploads = new List<Upload>();
        string stdout = "", stderr = "";
        var index = 0;
        foreach (var step in Steps())
        {
            index++;
            var name = Scalar(step, "name") ?? Scalar(step, "uses")!;
            string Resolve(string text) => Expression().Replace(text, m => Evaluate(m.Groups[1].Value.Trim(), inputs, outputs));
            if (Scalar(step, "uses") is { } uses)
            {
                if (uses.StartsWith("actions/upload-artifact@", StringComparison.Ordinal))
                {
                    var condition = Scalar(step, "if") ?? "success()";
                    uploads.Add(new Upload(name, Condition(Expression().Match(condition).Groups[1].Value, inputs, outputs), Resolve(Scalar(Map(step, "with"), "path")!)));
                }

                continue;
            }

            var script = Scalar(step, "run")!;
            if (script.EndsWith(" build", StringComparison.Ordinal))
            {
                continue; // bin/diffkeeper is the binary under test
            }

            var outputFile = _dir.Sub($"output-{index}");
            File.WriteAllText(outputFile, "");
            var scriptFile = _dir.Sub($"step-{index}.sh");
            File.WriteAllText(scriptFile, script);
            var psi = new ProcessStartInfo("bash", ["--noprofile", "--norc", "-eo", "pipefail", scriptFile])
            {
                WorkingDirectory = Workspace,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            psi.Environment.Remove("DIFFKEEPER_TRACE");
            psi.Environment["PATH"] = Path.GetDirectoryName(Path.GetFullPath(Cli.Executable)) + ":" + Environment.GetEnvironmentVariable("PATH");
            psi.Environment["GITHUB_ACTION_PATH"] = RepoRoot();
            psi.Environment["GITHUB_OUTPUT"] = outputFile;
            psi.Environment["GITHUB_STEP_SUMMARY"] = _dir.Sub("summary.md");
            psi.Environment["GITHUB_PATH"] = _dir.Sub("path");
            psi.Environment["GITHUB_JOB"] = "test";
            if (((YamlMappingNode)step).Children.TryGetValue(new YamlScalarNode("env"), out var env))
            {
                foreach (var (key, value) in ((YamlMappingNode)env).Children)
                {
                    psi.Environment[((YamlScalarNode)key).Value!] = Resolve(((YamlScalarNode)value).Value!);
                }
            }

            using var p = Process.Start(psi)!;
            var o = p.StandardOutput.ReadToEndAsync();
            var e = p.StandardError.ReadToEndAsync();
            Assert.True(p.WaitForExit(TimeSpan.FromMinutes(2)), $"step '{name}' did not finish");
            stdout += o.Result;
            stderr += e.Result;
            if (Scalar(step, "id") is { } id)
            {
                outputs[id] = File.ReadAllLines(outputFile).Where(l => l.Contains('=', StringComparison.Ordinal))
                    .ToDictionary(l => l[..l.IndexOf('=', StringComparison.Ordinal)], l => l[(l.IndexOf('=', StringComparison.Ordinal) + 1)..]);
            }

            if (p.ExitCode != 0)
            {
                return new ActionRun(p.ExitCode, stdout, stderr, uploads);
            }
        }

        return new ActionRun(0, stdout, stderr, uploads);
    }

    /// <summary>The expressions action.yml uses: inputs.X, steps.ID.outputs.Y, strategy.job-index.</summary>
    private static string Evaluate(string expression, Dictionary<string, string> inputs, Dictionary<string, Dictionary<string, string>> outputs)
    {
        var parts = expression.Split('.');
        return parts switch
        {
            ["inputs", var name] => inputs[name],
            ["steps", var id, "outputs", var name] => outputs.TryGetValue(id, out var o) && o.TryGetValue(name, out var v) ? v : "",
            ["strategy", "job-index"] => "0",
            _ => throw new InvalidOperationException($"the test's runner does not know the expression '{expression}'"),
        };
    }

    /// <summary>An `if:` of terms joined by &&: !cancelled(), X == 'literal', X != 'literal'.</summary>
    private static bool Condition(string expression, Dictionary<string, string> inputs, Dictionary<string, Dictionary<string, string>> outputs) =>
        expression.Split("&&", StringSplitOptions.TrimEntries).All(term =>
        {
            if (term == "!cancelled()")
            {
                return true;
            }

            var m = Comparison().Match(term);
            Assert.True(m.Success, $"the test's runner does not know the condition '{term}'");
            var equal = Evaluate(m.Groups[1].Value, inputs, outputs) == m.Groups[3].Value;
            return m.Groups[2].Value == "==" ? equal : !equal;
        });

    [GeneratedRegex(@"\binputs\.([A-Za-z0-9_-]+)")]
    private static partial Regex InputReference();

    [GeneratedRegex(@"\$\{\{(.*?)\}\}")]
    private static partial Regex Expression();

    [GeneratedRegex(@"^([A-Za-z0-9_.-]+) (==|!=) '([^']*)'$")]
    private static partial Regex Comparison();
}
