namespace DiffKeeper.Cli.Rendering;

/// <summary>Where commands write: text for people and machines, and raw bytes for `show`. Tests pass their own.</summary>
public interface IConsole
{
    TextWriter Out { get; }

    TextWriter Error { get; }

    Stream OpenStandardOutput();
}

/// <summary>The process's real stdout and stderr.</summary>
public sealed class SystemConsole : IConsole
{
    public TextWriter Out { get; } = new StreamWriter(Console.OpenStandardOutput(), new System.Text.UTF8Encoding(false)) { AutoFlush = false };

    public TextWriter Error { get; } = new StreamWriter(Console.OpenStandardError(), new System.Text.UTF8Encoding(false)) { AutoFlush = true };

    public Stream OpenStandardOutput()
    {
        Out.Flush();
        return Console.OpenStandardOutput();
    }
}
