using System.Diagnostics;

namespace DiffKeeper.IntegrationTests.Faults;

/// <summary>One fault of the layer: <see cref="Kind"/> at write or sync call <see cref="At"/> (from 1) of one session.</summary>
public sealed record FaultPoint(int Session, string Kind, long At)
{
    /// <summary>The kinds that count write calls (the others count sync calls).</summary>
    public static readonly string[] WriteKinds = ["enospc", "eio", "short"];

    public static readonly string[] Kinds = [.. WriteKinds, "fsync"];

    public override string ToString() => $"session {Session} {Kind} at {(Kind == "fsync" ? "sync" : "write")} call {At}";
}

/// <summary>
/// dkfault (Faults/dkfault.c), compiled once per test run with cc into a shared object and loaded into the published
/// binary with LD_PRELOAD: it counts the write and sync calls on files under one directory (the trace) and fails the
/// one chosen (ENOSPC, EIO, a short write, EIO from fsync). The NativeAOT binary and the system libsqlite3 it loads
/// both call libc through the dynamic linker, so the pack writer and the catalog are under it unchanged.
/// </summary>
public static class FaultLayer
{
    private static readonly Lazy<(string? Library, string? Problem)> Built = new(Compile);

    /// <summary>Why the layer cannot be used here (no C compiler), or null.</summary>
    public static string? Unavailable => Built.Value.Problem;

    /// <summary>
    /// The environment that loads the layer over <paramref name="traceDir"/>: faults nothing when <paramref name="fault"/>
    /// is null; with <paramref name="arm"/>, calls are counted only once that file exists.
    /// </summary>
    public static Dictionary<string, string> Environment(string traceDir, FaultPoint? fault, string log, bool traceAll, string? arm = null)
    {
        var env = new Dictionary<string, string>
        {
            ["LD_PRELOAD"] = Built.Value.Library ?? throw new InvalidOperationException(Unavailable),
            ["DK_FAULT_DIR"] = traceDir,
            ["DK_FAULT_LOG"] = log,
            ["DK_FAULT_TRACE"] = traceAll ? "1" : "0",
        };
        if (arm is not null)
        {
            env["DK_FAULT_ARM"] = arm;
        }

        if (fault is not null)
        {
            env["DK_FAULT_KIND"] = fault.Kind;
            env["DK_FAULT_AT"] = fault.At.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        return env;
    }

    /// <summary>Write and sync calls in a log written with DK_FAULT_TRACE=1.</summary>
    public static (long Writes, long Syncs) Count(string log)
    {
        var lines = File.Exists(log) ? File.ReadAllLines(log) : [];
        return (lines.Count(l => l.StartsWith("write ", StringComparison.Ordinal)), lines.Count(l => l.StartsWith("sync ", StringComparison.Ordinal)));
    }

    private static (string?, string?) Compile()
    {
        var source = Path.Combine(AppContext.BaseDirectory, "Faults", "dkfault.c");
        var dir = Path.Combine(Path.GetTempPath(), "dk-fault-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        var output = Path.Combine(dir, "dkfault.so");
        try
        {
            var psi = new ProcessStartInfo("cc", ["-O2", "-Wall", "-shared", "-fPIC", "-o", output, source]) { RedirectStandardError = true, RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            var text = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? (output, null) : (null, "cc could not build the fault layer: " + text.Trim());
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (null, $"no C compiler (cc) to build the fault layer: {e.Message}");
        }
    }
}
