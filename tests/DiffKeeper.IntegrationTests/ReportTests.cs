using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// `report`: one self-contained HTML file. The flaky demo's report is opened in a real headless Chromium (Debian's
/// chromium driven by playwright-core from tests/report-browser); the rest is checked on the file itself.
/// </summary>
public sealed partial class ReportTests : IDisposable
{
    private const string Chromium = "/usr/bin/chromium";

    private readonly TempDir _dir = new();

    public ReportTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
                {
                    return dir.FullName;
                }
            }

            throw new InvalidOperationException("cannot find the repository root (DiffKeeper.slnx)");
        }
    }

    /// <summary>Records demo/flaky-ci-test as run-demo.sh does; returns the seq of the TRUNCATE that corrupts status.log.</summary>
    private long RecordFlakyDemo()
    {
        var demo = Path.Combine(RepoRoot, "demo", "flaky-ci-test");
        CopyTree(Path.Combine(demo, "seed"), Path.Combine(Work, "seed"));
        var run = Cli.Run(Work, "record", "-q", "--trace", Trace, "--", Path.Combine(demo, "flaky_test.sh"));
        Assert.True(run.ExitCode == 1, run.ToString());
        var truncate = Cli.Ok(Work, "timeline", "--trace", Trace, "--json", "--op", "TRUNCATE", "--path", "status.log").Lines
            .Select(l => JsonDocument.Parse(l).RootElement).First(e => e.GetProperty("op").GetString() == "TRUNCATE");
        return truncate.GetProperty("seq").GetInt64();
    }

    private static void CopyTree(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
    }

    /// <summary>tests/report-browser, or the test is skipped with what is missing.</summary>
    private static string BrowserDriver()
    {
        if (!File.Exists(Chromium))
        {
            Assert.Skip($"Debian's chromium is not installed ({Chromium} is missing); ./test.sh installs it with apt");
        }

        var driver = Path.Combine(RepoRoot, "tests", "report-browser");
        if (!Directory.Exists(Path.Combine(driver, "node_modules", "playwright-core")))
        {
            Assert.Skip($"{driver}/node_modules/playwright-core is missing: run 'npm ci' there (./test.sh does)");
        }

        return driver;
    }

    private static string Screenshot(string name)
    {
        var artifacts = Path.Combine(RepoRoot, "artifacts", "test-results");
        Directory.CreateDirectory(artifacts);
        return Path.Combine(artifacts, name);
    }

    [Fact]
    public void The_flaky_demo_report_opens_in_chromium_and_shows_the_file_at_the_failing_write()
    {
        var driver = BrowserDriver();
        var seq = RecordFlakyDemo();
        var expected = Cli.Ok(Work, "show", "status.log", "--trace", Trace, "--time", $"#{seq}").Stdout;
        var report = _dir.Sub("report.html");
        Cli.Ok(Work, "report", "--trace", Trace, "--out", report);

        var screenshot = Screenshot("report-flaky-demo.png");
        var page = RunNode(driver, "check-report.mjs", report, screenshot, seq.ToString(System.Globalization.CultureInfo.InvariantCulture));

        Assert.Empty(page.GetProperty("consoleErrors").EnumerateArray());
        Assert.Empty(page.GetProperty("pageErrors").EnumerateArray());
        Assert.Empty(page.GetProperty("requests").EnumerateArray()); // nothing fetched, not even a favicon
        Assert.True(page.GetProperty("rowFound").GetBoolean(), page.ToString());
        Assert.Equal("status.log", page.GetProperty("fileTitle").GetString());
        Assert.Equal(expected, page.GetProperty("content").GetString());
        Assert.Equal("step 1: connecting to d", expected); // the demo's corruption: truncate -s 23
        Assert.Contains(seq, page.GetProperty("highlighted").EnumerateArray().Select(e => e.GetInt64())); // just before the failing exit
        Assert.True(page.GetProperty("exitMarked").GetBoolean());
        Assert.Equal(1, page.GetProperty("tickForSeq").GetInt32());
        Assert.Contains("+step 1: connecting to d", page.GetProperty("diff").GetString()); // the diff from the version before
        Assert.Equal(0, page.GetProperty("rowsAfterSearch").GetInt32());
        Assert.True(new FileInfo(screenshot).Length > 10_000, "the screenshot is missing or empty");
    }

    [Fact]
    public void An_ebpf_report_shows_each_writes_offset_and_length_and_a_bursts_byte_total_as_the_timeline_does()
    {
        var driver = BrowserDriver();
        EbpfSupport.SkipUnlessAvailable();
        Cli.Ok(Work, "record", "-q", "--capture", "ebpf", "--trace", Trace, "--", "sh", "-c", WriteRangeTests.Script);
        var first = Cli.Ok(Work, "timeline", "--trace", Trace, "--json", "--op", "WRITE", "--path", "data.bin").Lines
            .Select(l => JsonDocument.Parse(l).RootElement.GetProperty("seq").GetInt64()).ToList();
        Assert.Equal(2, first.Count);
        var report = _dir.Sub("report.html");
        Cli.Ok(Work, "report", "--trace", Trace, "--out", report);

        var page = RunNode(driver, "check-report.mjs", report, Screenshot("report-write-ranges.png"), first[0].ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Empty(page.GetProperty("consoleErrors").EnumerateArray());
        Assert.Empty(page.GetProperty("pageErrors").EnumerateArray());
        // Each row: [seq, [time, op, path, size, process, event]], as the page shows it.
        var rows = page.GetProperty("cells").EnumerateArray()
            .ToDictionary(r => r[0].GetInt64(), r => r[1].EnumerateArray().Select(c => c.GetString()!).ToArray());
        Assert.Equal("4 KiB at 8192 → 12 KiB", rows[first[0]][3]);
        Assert.Equal("100 B at 300 → 12 KiB", rows[first[1]][3]);
        var burst = Assert.Single(rows.Values, r => r[1] == "WRITE" && r[2] == "burst.bin");
        Assert.Equal("10 KiB", burst[3]);
        Assert.EndsWith(" ×20 writes, 10 KiB", burst[5], StringComparison.Ordinal);
        Assert.Contains("WRITE data.bin · 4 KiB at 8192 · ", page.GetProperty("eventInfo").GetString(), StringComparison.Ordinal);
    }

    private static JsonElement RunNode(string cwd, params string[] args)
    {
        var psi = new ProcessStartInfo("node") { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        Process p;
        try
        {
            p = Process.Start(psi)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Assert.Skip($"node is not on PATH ({e.Message}); ./test.sh installs nodejs with apt");
            throw;
        }

        using (p)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var stderr = p.StandardError.ReadToEndAsync();
            if (!p.WaitForExit(TimeSpan.FromMinutes(2)))
            {
                p.Kill(true);
                throw new TimeoutException("the browser check did not finish in 2 minutes");
            }

            Assert.True(p.ExitCode == 0, $"node {string.Join(' ', args)} exited {p.ExitCode}:\n{stdout.Result}\n{stderr.Result}");
            return JsonDocument.Parse(stdout.Result).RootElement.Clone();
        }
    }

    [Fact]
    public void The_report_is_one_file_that_fetches_nothing_and_carries_the_session()
    {
        File.WriteAllText(Path.Combine(Work, "a.txt"), "one\n");
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c",
            "echo two >> a.txt; printf 'bin\\000ary' > b.bin; sleep 0.2; printf 'Y!' | dd of=b.bin bs=2 seek=3 conv=notrunc status=none");
        var report = Path.Combine(_dir.Sub("out"), "r.html");
        Directory.CreateDirectory(_dir.Sub("out"));
        var summary = Cli.Ok(Work, "report", "--trace", Trace, "--out", report, "--json");
        var s = JsonDocument.Parse(summary.Stdout).RootElement;
        Assert.Equal(report, s.GetProperty("file").GetString());
        Assert.Equal(new FileInfo(report).Length, s.GetProperty("bytes").GetInt64());
        Assert.Empty(Directory.GetFiles(_dir.Sub("out"), ".*")); // no temporary sibling left

        var html = File.ReadAllText(report);
        Assert.StartsWith("<!DOCTYPE html>", html, StringComparison.Ordinal);
        Assert.Contains("Content-Security-Policy\" content=\"default-src 'none'", html, StringComparison.Ordinal);
        Assert.DoesNotMatch(ExternalReference(), html); // no src=, href= or url() anywhere: everything is inline

        var data = JsonDocument.Parse(DataElement().Match(html).Groups[1].Value).RootElement;
        // inotify knows no write's offset or length: the report says none and sums no burst (offset, length, bytes).
        Assert.All(data.GetProperty("events").EnumerateArray(), e => Assert.All(e.EnumerateArray().Skip(12), v => Assert.Equal(JsonValueKind.Null, v.ValueKind)));
        Assert.All(data.GetProperty("events").EnumerateArray(), e => Assert.Equal(15, e.GetArrayLength()));
        Assert.Contains("echo two >> a.txt", data.GetProperty("session").GetProperty("command").GetString(), StringComparison.Ordinal);
        var files = data.GetProperty("files").EnumerateArray().ToDictionary(f => f.GetProperty("path").GetString()!, f => f.GetProperty("versions"));
        var contents = data.GetProperty("contents");
        var a = files["a.txt"].EnumerateArray().Last();
        Assert.Equal("one\ntwo\n", contents.GetProperty(a.GetProperty("content").GetString()!).GetProperty("text").GetString());
        var b = files["b.bin"].EnumerateArray().Last();
        Assert.True(contents.GetProperty(b.GetProperty("content").GetString()!).GetProperty("binary").GetBoolean());
        var previous = files["b.bin"].EnumerateArray().Reverse().Skip(1).First(v => v.GetProperty("kind").GetString() == "file" && v.GetProperty("size").GetInt64() > 0);
        Assert.Equal(7, previous.GetProperty("size").GetInt64());
        var ranges = b.GetProperty("ranges").EnumerateArray().Select(r => (r[0].GetInt64(), r[1].GetInt64())).ToList();
        Assert.Equal([(6, 1), (7, 1)], ranges); // "bin\0ary" -> "bin\0arY!": byte 6 changed, byte 7 added

        // The same report on stdout.
        var stdout = Cli.Ok(Work, "report", "--trace", Trace, "--out", "-");
        Assert.StartsWith("<!DOCTYPE html>", stdout.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public void Report_errors_are_one_line_with_their_exit_code()
    {
        var none = Cli.Run(Work, "report", "--trace", _dir.Sub("nothing"));
        Assert.Equal(3, none.ExitCode);
        Assert.StartsWith("diffkeeper: no trace at ", none.Stderr, StringComparison.Ordinal);

        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "true");
        var unwritable = Cli.Run(Work, "report", "--trace", Trace, "--out", Path.Combine(_dir.Sub("missing-dir"), "r.html"));
        Assert.Equal(10, unwritable.ExitCode);
        Assert.Single(unwritable.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("diffkeeper: ", unwritable.Stderr, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"\b(src|href)\s*=|url\(", RegexOptions.IgnoreCase)]
    private static partial Regex ExternalReference();

    [GeneratedRegex("<script id=\"dk-data\" type=\"application/json\">(.*?)</script>", RegexOptions.Singleline)]
    private static partial Regex DataElement();
}
