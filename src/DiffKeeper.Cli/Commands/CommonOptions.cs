using System.CommandLine;
using DiffKeeper.Core;

namespace DiffKeeper.Cli.Commands;

/// <summary>Options several commands share, so they read and document the same way everywhere.</summary>
internal static class CommonOptions
{
    public const string TraceEnv = "DIFFKEEPER_TRACE";

    public static Option<string> Trace() => new("--trace", "--state-dir")
    {
        Description = $"Trace directory (default: ${TraceEnv}, else ./diffkeeper-trace)",
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable(TraceEnv) is { Length: > 0 } env ? env : "diffkeeper-trace",
        HelpName = "DIR",
    };

    public static Option<long?> Session() => new Option<long?>("--session")
    {
        Description = "Session number (default: the latest; 'diffkeeper sessions' lists them)",
        HelpName = "N",
    }.Expecting("a session number");

    public static Option<TimeSpec?> Time(string name, string description) => new Option<TimeSpec?>(name)
    {
        Description = description,
        HelpName = "T",
    }.ExpectingTime();

    public const string TimeHelp = "a duration since start (1.5s, 2m14s, 1h2m3.25s), an RFC 3339 time (2026-11-22T03:30:00.123Z), an event (#1234: right after it), 'start' or 'end'";

}
