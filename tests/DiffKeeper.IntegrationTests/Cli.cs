using System.Diagnostics;
using System.Text;
using System.Text.Json;

namespace DiffKeeper.IntegrationTests;

/// <summary>Runs the published diffkeeper executable.</summary>
public static class Cli
{
    public static string Executable { get; } = Find();

    private static string Find()
    {
        if (Environment.GetEnvironmentVariable("DIFFKEEPER_BIN") is { Length: > 0 } env)
        {
            return env;
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
            {
                var bin = Path.Combine(dir.FullName, "bin", "diffkeeper");
                return File.Exists(bin) ? bin : throw new InvalidOperationException($"{bin} is missing: run ./build.sh first (./test.sh does)");
            }
        }

        throw new InvalidOperationException("cannot find the repository root (DiffKeeper.slnx)");
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr, byte[] StdoutBytes)
    {
        public string[] Lines => Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);

        public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
    }

    public static Process Start(string cwd, params string[] args) => Start(null, cwd, args);

    /// <summary>Starts diffkeeper with <paramref name="environment"/> added to its environment.</summary>
    public static Process Start(IReadOnlyDictionary<string, string>? environment, string cwd, params string[] args)
    {
        var psi = new ProcessStartInfo(Executable)
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Remove("DIFFKEEPER_TRACE");
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        return Process.Start(psi)!;
    }

    public static Result Run(string cwd, params string[] args) => Run(null, cwd, args);

    public static Result Run(IReadOnlyDictionary<string, string>? environment, string cwd, params string[] args)
    {
        using var p = Start(environment, cwd, args);
        p.StandardInput.Close();
        var stdout = new MemoryStream();
        var copy = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3)))
        {
            p.Kill(true);
            throw new TimeoutException($"diffkeeper {string.Join(' ', args)} did not finish in 3 minutes");
        }

        copy.Wait();
        var bytes = stdout.ToArray();
        return new Result(p.ExitCode, Encoding.UTF8.GetString(bytes), stderr.Result, bytes);
    }

    public static Result Ok(string cwd, params string[] args)
    {
        var r = Run(cwd, args);
        Assert.True(r.ExitCode == 0, $"diffkeeper {string.Join(' ', args)} failed: {r}");
        return r;
    }

    public static List<JsonElement> JsonLines(Result r) =>
        r.Lines.Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
}
