namespace DiffKeeper.Cli.Rendering;

/// <summary>Where commands write: text for people and machines, and raw bytes for `show`. Tests pass their own.</summary>
public interface IConsole
{
    TextWriter Out { get; }

    TextWriter Error { get; }

    Stream OpenStandardOutput();
}

/// <summary>
/// The process's real stdout and stderr, as plain write(2) streams over file descriptors 1 and 2 (see
/// <see cref="FileDescriptorStream"/>). Not
/// Console.OpenStandardOutput/Error: their first write initializes .NET's terminal support, which (when stdin is a
/// terminal) sends the terminfo keypad-transmit sequence (ESC[?1h ESC=) to the terminal and never sends the reset,
/// leaving the user's terminal in application-cursor mode after diffkeeper exits.
/// </summary>
public sealed class SystemConsole : IConsole
{
    private readonly Stream _stdout = Open(1);

    public SystemConsole()
    {
        Out = new StreamWriter(_stdout, new System.Text.UTF8Encoding(false), 4096, leaveOpen: true) { AutoFlush = false };
        Error = new StreamWriter(Open(2), new System.Text.UTF8Encoding(false)) { AutoFlush = true };
    }

    public TextWriter Out { get; }

    public TextWriter Error { get; }

    public Stream OpenStandardOutput()
    {
        Out.Flush();
        return Open(1);
    }

    /// <summary>An unbuffered stream over <paramref name="fd"/>, not closing it, writing at the descriptor's offset.</summary>
    private static Stream Open(int fd) => new FileDescriptorStream(fd);
}
