using System.Diagnostics;
using System.Globalization;
using System.Net.Http;
using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// /metrics scraped during a run: the text passes `promtool check metrics` and a strict line parser, and the
/// capture counters equal the events of the run as its timeline lists them.
/// </summary>
[Collection(KeepCollection.Name)]
public sealed partial class MetricsEndpointTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [GeneratedRegex(@"^diffkeeper: metrics on http://(\S+)/metrics$", RegexOptions.Multiline)]
    private static partial Regex MetricsLine();

    // A sample line of the 0.0.4 text format: name, optional {label="value",...}, a value.
    [GeneratedRegex(@"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*=""([^""\\\n]|\\[\\""n])*"")(,[a-zA-Z_][a-zA-Z0-9_]*=""([^""\\\n]|\\[\\""n])*"")*\})? (-?[0-9.eE+-]+|\+Inf|-Inf|NaN)$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))$")]
    private static partial Regex CommentLine();

    [Fact]
    public async Task A_scrape_during_a_run_is_valid_text_format_and_counts_the_runs_events()
    {
        var state = _dir.Sub("data");
        var store = _dir.Sub("deltas");
        var marker = _dir.Sub("workload-done");
        var release = _dir.Sub("release");
        Directory.CreateDirectory(state);
        var script = $"""
            cd '{state}'
            for i in 1 2 3 4 5; do echo "file $i" > f$i; done
            for i in 1 2 3; do echo more >> f4; sleep 0.05; done
            mkdir d; echo inside > d/x
            mv f1 f1b; rm f2; chmod 600 f3
            touch '{marker}'
            while [ ! -e '{release}' ]; do sleep 0.02; done
            """;
        using var run = KeepProcess.StartDiffKeeper(_dir.Path, "run", "--state-dir", state, "--store", store, "--metrics-addr", "127.0.0.1:0", "--", "sh", "-c", script);
        var sw = Stopwatch.StartNew();
        while (!File.Exists(marker))
        {
            Assert.False(run.Process.HasExited, run.Stderr);
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), run.Stderr);
            await Task.Delay(10, TestContext.Current.CancellationToken);
        }

        // Once the timeline shows the last change, every event before it was handled and committed.
        List<System.Text.Json.JsonElement> timeline;
        do
        {
            await Task.Delay(20, TestContext.Current.CancellationToken);
            timeline = Cli.JsonLines(Cli.Ok(_dir.Path, "timeline", "--trace", store, "--json"));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), "the timeline never showed the chmod");
        }
        while (!timeline.Any(e => e.GetProperty("op").GetString() == "CHMOD"));

        var address = MetricsLine().Match(run.Stderr).Groups[1].Value;
        using var http = new HttpClient();
        var response = await http.GetAsync(new Uri($"http://{address}/metrics"), TestContext.Current.CancellationToken);
        Assert.Equal("text/plain; version=0.0.4; charset=utf-8", response.Content.Headers.ContentType!.ToString());
        var text = await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken);
        Assert.Equal("ok\n", await http.GetStringAsync(new Uri($"http://{address}/healthz"), TestContext.Current.CancellationToken));

        Assert.Equal("", Promtool(text));
        var samples = new Dictionary<string, double>();
        foreach (var line in text.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.StartsWith('#'))
            {
                Assert.Matches(CommentLine(), line);
                continue;
            }

            var m = SampleLine().Match(line);
            Assert.True(m.Success, $"not a valid sample line: {line}");
            samples[line[..line.LastIndexOf(' ')]] = double.Parse(line[(line.LastIndexOf(' ') + 1)..], CultureInfo.InvariantCulture);
        }

        foreach (var op in new[] { "create", "write", "rename", "delete", "chmod", "mkdir" })
        {
            var inTimeline = timeline.Count(e => e.GetProperty("op").GetString() == op.ToUpperInvariant());
            Assert.True(inTimeline > 0, $"the run made no {op}");
            Assert.Equal(inTimeline, samples[$"diffkeeper_capture_events_total{{op=\"{op}\"}}"]);
        }

        Assert.Equal(0, samples["diffkeeper_lost_events_total"]);
        Assert.True(samples["diffkeeper_versions_total"] >= 8);
        Assert.True(samples["diffkeeper_flush_lag_seconds_count"] > 0);
        Assert.Equal(samples["diffkeeper_flush_lag_seconds_count"], samples["diffkeeper_flush_lag_seconds_bucket{le=\"+Inf\"}"]);
        Assert.Equal(1, samples["diffkeeper_app_up"]);
        Assert.Contains("diffkeeper_build_info{version=", text);

        File.WriteAllText(release, "");
        Assert.Equal(0, run.WaitForExit(TimeSpan.FromSeconds(60)));
    }

    /// <summary>What `promtool check metrics` says about the text (empty: no problem).</summary>
    private static string Promtool(string text)
    {
        var psi = new ProcessStartInfo("promtool") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add("check");
        psi.ArgumentList.Add("metrics");
        using var p = Process.Start(psi)!;
        p.StandardInput.Write(text);
        p.StandardInput.Close();
        var output = p.StandardOutput.ReadToEndAsync();
        var errors = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (output.Result + errors).Trim() + (p.ExitCode == 0 ? "" : $" (exit {p.ExitCode})");
    }
}
