using System.Diagnostics;
using System.Text;
using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>`diff`: its hunks are GNU diff -u's for the same two moments; sessions compared; stat, JSON, exit codes.</summary>
public sealed class DiffCommandTests : IDisposable
{
    private readonly TempDir _dir = new();

    public DiffCommandTests() => Directory.CreateDirectory(Work);

    public void Dispose() => _dir.Dispose();

    private string Work => _dir.Sub("work");

    private string Trace => _dir.Sub("trace");

    private static string Lines(int from, int to, Func<int, string>? text = null) =>
        string.Concat(Enumerable.Range(from, to - from + 1).Select(i => (text ?? (n => $"line {n}"))(i) + "\n"));

    public static TheoryData<string> Edits => new(EditCases.Keys);

    private static readonly Dictionary<string, (string Before, string After)> EditCases = new()
    {
        ["insertion in the middle"] = (Lines(1, 20), Lines(1, 10) + "new\n" + Lines(11, 20)),
        ["deletion in the middle"] = (Lines(1, 20), Lines(1, 9) + Lines(12, 20)),
        ["change at the start"] = (Lines(1, 20), "first\n" + Lines(2, 20)),
        ["change at the end"] = (Lines(1, 20), Lines(1, 19) + "last\n"),
        ["insertion at the start"] = (Lines(1, 5), "zero\n" + Lines(1, 5)),
        ["append"] = (Lines(1, 5), Lines(1, 7)),
        ["no newline at the end before"] = (Lines(1, 5).TrimEnd('\n'), Lines(1, 5)),
        ["no newline at the end after"] = (Lines(1, 5), Lines(1, 5) + "tail"),
        ["no newline on both, last line changed"] = ("a\nb\nc", "a\nb\nC"),
        ["from an empty file"] = ("", Lines(1, 3)),
        ["to an empty file"] = (Lines(1, 3), ""),
        ["a line added among equal lines"] = ("a\na\na\nb\n", "a\na\na\na\nb\n"),
        ["a line removed among equal lines"] = ("x\ny\ny\ny\nz\n", "x\ny\ny\nz\n"),
        ["two hunks far apart"] = (Lines(1, 40), Lines(1, 2) + "two\n" + Lines(4, 35) + "thirty-six\n" + Lines(37, 40)),
        ["two changes six lines apart, one hunk"] = (Lines(1, 30), Lines(1, 9) + "ten\n" + Lines(11, 16) + "seventeen\n" + Lines(18, 30)),
        ["two changes seven lines apart, two hunks"] = (Lines(1, 30), Lines(1, 9) + "ten\n" + Lines(11, 17) + "eighteen\n" + Lines(19, 30)),
        ["every line changed"] = (Lines(1, 8), Lines(1, 8, n => $"other {n}")),
        ["interleaved edits"] = (Lines(1, 12), "line 1\nX\nline 3\nline 4\nline 6\nY\nline 7\nline 9\nline 10\nZ\nline 12\n"),
        ["blank lines and duplicates"] = ("}\n\n}\n\nfoo\n}\n", "}\n\nbar\n}\n\n}\n\nfoo\n}\n"),
        ["not UTF-8"] = ("caf\xe9\nb\n", "caf\xe9\nB\n"),
    };

    [Theory]
    [MemberData(nameof(Edits))]
    public void The_text_diff_equals_gnu_diff_u_of_two_exports_of_the_same_moments(string edit)
    {
        var (before, after) = EditCases[edit];
        File.WriteAllBytes(Path.Combine(Work, "f.txt"), Encoding.Latin1.GetBytes(before));
        File.WriteAllBytes(_dir.Sub("after"), Encoding.Latin1.GetBytes(after));
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "cp", _dir.Sub("after"), "f.txt");
        Cli.Ok(Work, "export", "--trace", Trace, "--time", "start", "--out", _dir.Sub("a"));
        Cli.Ok(Work, "export", "--trace", Trace, "--time", "end", "--out", _dir.Sub("b"));

        var ours = Cli.Run(Work, "diff", "--trace", Trace, "--from", "start", "--to", "end", "f.txt");
        var gnu = Gnu("-u", _dir.Sub("a/f.txt"), _dir.Sub("b/f.txt"));

        Assert.Equal(1, gnu.Code);
        Assert.True(ours.ExitCode == 11, ours.ToString());
        var hunks = ours.StdoutBytes.AsSpan(IndexAfterLineStarting(ours.StdoutBytes, "+++ ")).ToArray();
        var gnuHunks = gnu.Stdout.AsSpan(IndexAfterLineStarting(gnu.Stdout, "+++ ")).ToArray();
        Assert.Equal(Encoding.Latin1.GetString(gnuHunks), Encoding.Latin1.GetString(hunks));
        Assert.StartsWith("changed f.txt: ", ours.Stdout);
    }

    [Fact]
    public void Two_sessions_of_one_trace_compare_their_final_states_as_text_stat_and_json()
    {
        var pass = "rm -f *.log; printf 'test a ok\\ntest b ok\\n' > out.log; echo 1 > status";
        var fail = "rm -f *.log; printf 'test a ok\\ntest b FAILED\\n' > out.log; echo boom > err.log; echo 1 > status; chmod 600 status";
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", pass);
        Cli.Run(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", fail);

        var same = Cli.Run(Work, "diff", "--trace", Trace, "--session", "1", "--against", "1");
        Assert.Equal(0, same.ExitCode);
        Assert.Equal("", same.Stdout);

        var text = Cli.Run(Work, "diff", "--trace", Trace, "--session", "1", "--against", "2");
        Assert.True(text.ExitCode == 11, text.ToString());
        Assert.Equal(
            [
                "added file err.log (mode 0644, 5 B)",
                "--- /dev/null",
                "+++ b/err.log",
                "@@ -0,0 +1 @@",
                "+boom",
                "changed out.log: +1 -1 lines",
                "--- a/out.log",
                "+++ b/out.log",
                "@@ -1,2 +1,2 @@",
                " test a ok",
                "-test b ok",
                "+test b FAILED",
                "changed status: mode 0644 -> 0600",
            ],
            text.Lines);

        var stat = Cli.Run(Work, "diff", "--trace", Trace, "--session", "1", "--against", "2", "--stat").Lines;
        Assert.Equal(" err.log | added file, +1 -0 lines", stat[0]);
        Assert.Equal(" 3 paths changed, 2 insertions(+), 1 deletions(-)", stat[^1]);

        var json = Cli.JsonLines(Cli.Run(Work, "diff", "--trace", Trace, "--session", "1", "--against", "2", "--json", "*.log"));
        Assert.Equal(["err.log", "out.log"], json.Select(j => j.GetProperty("path").GetString()));
        Assert.Equal("added", json[0].GetProperty("change").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, json[0].GetProperty("before").ValueKind);
        Assert.Equal(1, json[1].GetProperty("insertions").GetInt32());
        Assert.Equal(1, json[1].GetProperty("deletions").GetInt32());
        Assert.Equal("text", json[1].GetProperty("content").GetString());
    }

    [Fact]
    public void Binary_files_give_their_changed_byte_ranges_and_kind_and_symlink_changes_are_named()
    {
        var data = new byte[100];
        data[0] = 0;
        File.WriteAllBytes(Path.Combine(Work, "b.bin"), data);
        File.WriteAllText(Path.Combine(Work, "thing"), "a file\n");
        File.CreateSymbolicLink(Path.Combine(Work, "link"), "b.bin");
        var script = "printf 'XY' | dd of=b.bin bs=1 seek=10 conv=notrunc 2>/dev/null; printf 'Z' | dd of=b.bin bs=1 seek=50 conv=notrunc 2>/dev/null; " +
                     "printf 'tail' >> b.bin; rm thing; ln -s b.bin thing; ln -sfn thing link";
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", script);

        var json = Cli.JsonLines(Cli.Run(Work, "diff", "--trace", Trace, "--json"));
        var bin = json.Single(j => j.GetProperty("path").GetString() == "b.bin");
        Assert.Equal("binary", bin.GetProperty("content").GetString());
        Assert.Equal([(10, 2), (50, 1), (100, 4)], bin.GetProperty("ranges").EnumerateArray().Select(r => (r.GetProperty("offset").GetInt32(), r.GetProperty("length").GetInt32())));
        var lines = Cli.Run(Work, "diff", "--trace", Trace).Lines;
        Assert.Contains("changed link: symlink target 'b.bin' -> 'thing'", lines);
        Assert.Contains("changed thing: file (mode 0644, 7 B) -> symlink -> 'b.bin'", lines);
        Assert.Contains("  bytes 10-11 (2 B)", lines);
    }

    [Fact]
    public void From_and_to_pick_moments_within_a_session_and_bad_combinations_are_usage_errors()
    {
        Cli.Ok(Work, "record", "-q", "--capture", "inotify", "--trace", Trace, "--", "sh", "-c", "echo 1 > a; sleep 0.3; echo 2 > b; sleep 0.3; echo 3 > c");
        var events = Cli.JsonLines(Cli.Ok(Work, "timeline", "--trace", Trace, "--json", "--path", "b"));
        var seq = events.Last(e => e.GetProperty("op").GetString() != "EXIT").GetProperty("seq").GetInt64(); // --path keeps EXIT
        var r = Cli.Run(Work, "diff", "--trace", Trace, "--from", $"#{seq}", "--stat");
        Assert.Equal([" c | added file, +1 -0 lines", " 1 path changed, 1 insertions(+), 0 deletions(-)"], r.Lines);
        Assert.Equal(2, Cli.Run(Work, "diff", "--trace", Trace, "--against", "1", "--from", "1s").ExitCode);
    }

    private static int IndexAfterLineStarting(byte[] text, string prefix)
    {
        var p = Encoding.ASCII.GetBytes(prefix);
        for (var i = 0; i < text.Length; i = Array.IndexOf(text, (byte)'\n', i) + 1)
        {
            if (text.AsSpan(i).StartsWith(p))
            {
                return Array.IndexOf(text, (byte)'\n', i) + 1;
            }

            if (Array.IndexOf(text, (byte)'\n', i) < 0)
            {
                break;
            }
        }

        throw new InvalidOperationException($"no line starting with '{prefix}' in:\n{Encoding.Latin1.GetString(text)}");
    }

    private static (int Code, byte[] Stdout) Gnu(params string[] args)
    {
        var psi = new ProcessStartInfo("diff", args) { RedirectStandardOutput = true, UseShellExecute = false };
        using var p = Process.Start(psi)!;
        var output = new MemoryStream();
        p.StandardOutput.BaseStream.CopyTo(output);
        p.WaitForExit();
        return (p.ExitCode, output.ToArray());
    }
}
