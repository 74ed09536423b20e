using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests;

/// <summary>
/// A class fixture: a trace recorded (inotify) from shell scripts, one session per script, each run inside the same
/// fresh watched directory. Tests copy <see cref="Trace"/> before damaging it.
/// </summary>
public class ScriptedTrace : IDisposable
{
    private readonly TempDir _dir = new();

    protected ScriptedTrace(params string[] scripts)
    {
        var work = _dir.Sub("work");
        Directory.CreateDirectory(work);
        Trace = _dir.Sub("trace");
        foreach (var script in scripts)
        {
            Cli.Ok(_dir.Path, "record", "-q", "--capture", "inotify", "--trace", Trace, "--watch", work, "--", "sh", "-c", $"cd '{work}'; {script}");
        }
    }

    public string Trace { get; }

    /// <summary>A directory to run diffkeeper in.</summary>
    protected string Cwd => _dir.Path;

    public void Dispose()
    {
        _dir.Dispose();
        GC.SuppressFinalize(this);
    }
}
