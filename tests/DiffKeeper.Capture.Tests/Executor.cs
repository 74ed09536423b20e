using System.Diagnostics;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// dkexec (Executor/dkexec.c), compiled once per test run with cc into a temp directory: it runs a script as the
/// recorded command with raw *at calls, renameat2 and fallocate, and writes the ground truth itself.
/// </summary>
public static class Executor
{
    private static readonly Lazy<string> Binary = new(Compile);

    public static string Path => Binary.Value;

    private static string Compile()
    {
        var source = System.IO.Path.Combine(AppContext.BaseDirectory, "Executor", "dkexec.c");
        var dir = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "dk-exec-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var output = System.IO.Path.Combine(dir, "dkexec");
        var (code, text) = Run("cc", "-O2", "-Wall", "-o", output, source);
        if (code != 0)
        {
            throw new InvalidOperationException("cc could not build dkexec: " + text);
        }

        return output;
    }

    /// <summary>Writes the snapshot of <paramref name="dir"/> to <paramref name="file"/>.</summary>
    public static void Snap(string dir, string file)
    {
        var (code, text) = Run(Path, "snap", dir, file);
        if (code != 0)
        {
            throw new InvalidOperationException($"dkexec snap {dir} failed: {text}");
        }
    }

    /// <summary>Runs a script directly (not recorded): used for the entries made before a recording.</summary>
    public static string Execute(string root, string script, string truth)
    {
        var (code, text) = Run(Path, "run", root, script, truth);
        return code != 0 ? throw new InvalidOperationException("dkexec run failed: " + text) : text;
    }

    public static (int Code, string Output) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout + stderr.Result);
    }
}
