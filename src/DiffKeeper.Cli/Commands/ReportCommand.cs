using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Report;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class ReportCommand
{
    public const string DefaultOut = "diffkeeper-report.html";

    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var output = new Option<string>("--out", "-o")
        {
            Description = $"The HTML file to write (default: {DefaultOut}; '-' for stdout); replaced if it exists",
            HelpName = "FILE",
            DefaultValueFactory = _ => DefaultOut,
        };
        var json = new Option<bool>("--json") { Description = "Print the summary as one JSON object: file, bytes, session, lines, omitted_lines, paths, versions, contents, omitted_contents" };
        var limits = ReportLimits.Default;
        var cmd = new Command("report", $"""
            Write one self-contained HTML file to look at a session: a zoomable timeline per path or per process with
            the command's exit marked and, when it failed, the last changes before the exit highlighted; filters by
            op and process and a search box; each file's versions with its content at any moment, text diffs between
            any two versions and changed byte ranges of binary files; the trees compared between two moments.
            Inline CSS and JavaScript, nothing fetched: it opens from disk, offline, in any browser.
            Bounded: at most {limits.MaxLines} timeline lines (writes of one process to one file folded; the first and
            last half kept when longer), {limits.MaxVersions} versions ({limits.MaxVersionsPerPath} of one path: its first and last half) and
            {limits.MaxContentBytes >> 20} MiB of file contents ({limits.MaxFileBytes >> 10} KiB per version, the first 4 KiB of binary files):
            about 25 MiB at most; what is left out is named in the page.
            Example: diffkeeper report --trace diffkeeper-trace --out report.html
            """)
        {
            trace, session, output, json,
        };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var outPath = pr.GetValue(output)!;
            ReportSummary summary;
            if (outPath == "-")
            {
                using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                summary = HtmlReport.Write(reader, s, stdout, limits);
            }
            else
            {
                outPath = Path.GetFullPath(outPath);
                summary = WriteFile(outPath, stream => HtmlReport.Write(reader, s, stream, limits));
            }

            if (pr.GetValue(json))
            {
                JsonSummary.ToStdout(console, j =>
                {
                    j.WriteString("file", outPath == "-" ? null : outPath);
                    j.WriteNumber("bytes", summary.Bytes);
                    j.WriteNumber("session", s.Id);
                    j.WriteNumber("lines", summary.Lines);
                    j.WriteNumber("omitted_lines", summary.OmittedLines);
                    j.WriteNumber("paths", summary.Paths);
                    j.WriteNumber("versions", summary.Versions);
                    j.WriteNumber("contents", summary.Contents);
                    j.WriteNumber("omitted_contents", summary.OmittedContents);
                });
            }
            else
            {
                var left = summary.OmittedLines > 0 ? $" ({summary.OmittedLines} left out)" : "";
                var leftContents = summary.OmittedContents > 0 ? $" ({summary.OmittedContents} left out)" : "";
                console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"diffkeeper: wrote {(outPath == "-" ? "the report" : outPath)} ({TimelineRenderer.FormatSize(summary.Bytes)}): session {s.Id}, {summary.Lines} timeline lines{left}, {summary.Paths} paths, {summary.Versions} versions, {summary.Contents} contents{leftContents}"));
            }

            return 0;
        });
        return cmd;
    }

    /// <summary>Writes through a temporary sibling renamed into place: a reader never sees half a report.</summary>
    private static T WriteFile<T>(string path, Func<Stream, T> write)
    {
        var temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.dk-tmp-{Environment.ProcessId}");
        try
        {
            T result;
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16))
            {
                result = write(file);
            }

            File.Move(temp, path, overwrite: true);
            return result;
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            TryDelete(temp);
            throw OsError.At(e, "write the report to", path);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            // best effort: the temporary name says what it was
        }
    }
}
