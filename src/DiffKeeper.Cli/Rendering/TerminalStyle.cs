using DiffKeeper.Core;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Cli.Rendering;

/// <summary>
/// Colour for people at a terminal: only when the descriptor is a terminal, TERM is not "dumb" and NO_COLOR is
/// unset or empty (no-color.org). Plain SGR sequences, each reset at once: nothing that changes the terminal's
/// modes, so it is left as found.
/// </summary>
public static class TerminalStyle
{
    public static bool Enabled(int fd) =>
        Environment.GetEnvironmentVariable("NO_COLOR") is not { Length: > 0 } &&
        Environment.GetEnvironmentVariable("TERM") is not "dumb" &&
        Libc.Isatty(fd) == 1;

    /// <summary><paramref name="text"/> in the colour of <paramref name="op"/>.</summary>
    public static string Op(ChangeOp op, string text) => op switch
    {
        ChangeOp.Create or ChangeOp.Mkdir or ChangeOp.Symlink => Sgr("32", text),
        ChangeOp.Write => Sgr("34", text),
        ChangeOp.Truncate => Sgr("33", text),
        ChangeOp.Rename => Sgr("35", text),
        ChangeOp.Delete or ChangeOp.Rmdir => Sgr("31", text),
        ChangeOp.Chmod => Sgr("36", text),
        ChangeOp.Lost or ChangeOp.Exit => Sgr("1;31", text),
        _ => text,
    };

    private static string Sgr(string code, string text) => $"\u001b[{code}m{text}\u001b[0m";
}
