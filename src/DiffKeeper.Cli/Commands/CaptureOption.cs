using System.CommandLine;
using DiffKeeper.Recording;

namespace DiffKeeper.Cli.Commands;

/// <summary>`--capture` of `record` and `run`: one parser, so the names, the error line and its exit code are the same.</summary>
internal static class CaptureOption
{
    public static Option<string> Create(string description, params string[] backends) => new Option<string>("--capture")
    {
        Description = description,
        HelpName = "BACKEND",
        DefaultValueFactory = _ => "auto",
    }.ExpectingOneOf(backends);

    public static CaptureMode Parse(string value) => Enum.Parse<CaptureMode>(value, ignoreCase: true);
}
