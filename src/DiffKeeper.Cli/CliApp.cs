using System.CommandLine;
using System.CommandLine.Help;
using System.Text.RegularExpressions;
using DiffKeeper.Cli.Commands;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli;

/// <summary>Assembles the commands and turns anticipated failures into one line and an exit code.</summary>
public static partial class CliApp
{
    private const string Description = """
        DiffKeeper: a flight recorder and time machine for the files of a process tree.
        Record what a command does to its files, list it as a timeline, rebuild the tree as it was at any moment.
        Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 no trace, 4 trace locked, 5 trace damaged,
        6 output not empty, 7 unsafe path in trace, 8 not found, 9 newer store format, 10 system error,
        11 'diff' found differences;
        'record' and 'run' exit with the command's own code (126/127 when it cannot run).
        """;

    /// <summary>The full command tree, with --help and --version.</summary>
    public static RootCommand Build(IConsole console)
    {
        var root = AddCommands(new RootCommand(Description), console);

        // Help wraps at Console.WindowWidth unless told a width, and reading it initializes .NET's terminal
        // support, which leaves the terminal in keypad-transmit mode (see SystemConsole).
        foreach (var option in root.Options)
        {
            if (option is HelpOption { Action: HelpAction help })
            {
                help.MaxWidth = 120;
            }
        }

        return root;
    }

    /// <summary>
    /// The command tree for a command line that asks for neither help nor the version: the same commands under a
    /// plain root. Building RootCommand's help and version options costs about 10 ms of a 40 ms start-up (their
    /// texts come through a ResourceManager and need the JIT), paid on every `record` and `export`.
    /// </summary>
    private static Command BuildLean(IConsole console) => AddCommands(new Command("diffkeeper", Description), console);

    private static bool WantsHelpOrVersion(string[] args) =>
        args.Length == 0 || args.Any(a => a is "-h" or "-?" or "--help" or "/h" or "/?" or "--version" || a.StartsWith('[') || a.StartsWith('@'));

    private static T AddCommands<T>(T root, IConsole console) where T : Command
    {
        foreach (var command in Commands(console))
        {
            root.Subcommands.Add(command);
        }

        return root;
    }

    private static Command[] Commands(IConsole console) =>
    [
        .. TraceCommands(console),
        CompletionCommand.Create(console, () => TraceCommands(console)),
        ManPageCommand.Create(console, Description, () => TraceCommands(console)),
    ];

    /// <summary>The commands that work on traces and stores (what completion and the man page describe).</summary>
    private static Command[] TraceCommands(IConsole console) => [.. TraceCommandTable.Select(c => c.Create(console))];

    // One table: a command named here is both built and listed (two lists let a name reach one and not the other).
    private static readonly (string Name, Func<IConsole, Command> Create)[] TraceCommandTable =
    [
        ("record", RecordCommand.Create),
        ("timeline", TimelineCommand.Create),
        ("export", ExportCommand.Create),
        ("ls", LsCommand.Create),
        ("diff", DiffCommand.Create),
        ("report", ReportCommand.Create),
        ("log", LogCommand.Create),
        ("show", ShowCommand.Create),
        ("verify", VerifyCommand.Create),
        ("sessions", SessionsCommand.Create),
        ("stats", StatsCommand.Create),
        ("prune", PruneCommand.Create),
        ("gc", GcCommand.Create),
        ("restore", RestoreCommand.Create),
        ("run", RunCommand.Create),
        ("push", PushCommand.Create),
        ("pull", PullCommand.Create),
        ("forget", ForgetCommand.Create),
        ("snapshot", SnapshotCommand.Create),
        ("materialize", MaterializeCommand.Create),
    ];

    /// <summary>The trace command of this name, or null.</summary>
    private static Command? TraceCommand(string name, IConsole console) =>
        Array.Find(TraceCommandTable, c => c.Name == name) is { Create: not null } found ? found.Create(console) : null;

    /// <summary>
    /// The tree for a command line whose first word names a trace command: that command alone under the plain root,
    /// which parses it as the whole tree would (no other command's options or arguments apply to it). Building all 22
    /// commands cost ~3-4 ms of CPU on every invocation (a `snapshot` of a 256 MiB file takes ~150).
    /// </summary>
    private static Command BuildFor(string[] args, IConsole console) =>
        args.Length > 0 && TraceCommand(args[0], console) is { } only
            ? new Command("diffkeeper", Description) { only }
            : BuildLean(console);

    public static async Task<int> RunAsync(string[] args, IConsole console)
    {
        args = RunCommand.AcceptSeedForm(args);
        DiffKeeper.Storage.TraceReader.Warning = warning => console.Error.WriteLine($"diffkeeper: warning: {warning}");
        try
        {
            if (Remote.RemoteInvocation.Target(args) is { } remote)
            {
                return await Remote.RemoteInvocation.RunAsync(args, remote, console, a => RunLocalAsync(a, console)).ConfigureAwait(false);
            }
        }
        catch (Exception e)
        {
            console.Out.Flush();
            var (code, message) = Describe(e);
            console.Error.WriteLine($"diffkeeper: {message}");
            return (int)code;
        }

        return await RunLocalAsync(args, console).ConfigureAwait(false);
    }

    /// <summary>Parses and runs a command line whose trace and store are local directories.</summary>
    private static async Task<int> RunLocalAsync(string[] args, IConsole console)
    {
        var parse = WantsHelpOrVersion(args) ? Build(console).Parse(args) : BuildFor(args, console).Parse(args);
        // With --help the parser reports no error for a word it does not know ('diffkeeper nosuch --help' printed the
        // root's help and exited 0): an unknown word is an error either way.
        if (parse.Errors.Count > 0 || parse.UnmatchedTokens.Count > 0)
        {
            console.Error.WriteLine($"diffkeeper: {UsageError.Describe(parse)}");
            return (int)ExitCode.Usage;
        }

        try
        {
            return await parse.InvokeAsync(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = null,
                Output = console.Out,
                Error = console.Error,
            }).ConfigureAwait(false);
        }
        catch (IOException e) when (e.HResult == BrokenPipe)
        {
            // The reader of our output left (`timeline | head`, `show big | head -c 100`): it has what it wanted. Stop
            // at once, quietly.
            return 0;
        }
        catch (Exception e)
        {
            FlushOutput(console);
            var (code, message) = Describe(e);
            console.Error.WriteLine($"diffkeeper: {Bounded(message, code)}");
            return (int)code;
        }
        finally
        {
            FlushOutput(console);
        }
    }

    private const int BrokenPipe = 32; // EPIPE

    private static void FlushOutput(IConsole console)
    {
        try
        {
            console.Out.Flush();
        }
        catch (IOException e) when (e.HResult == BrokenPipe)
        {
            // nobody reads any more: nothing left to say to them
        }
    }

    /// <summary>One line and an exit code for every failure; only the unexpected ones keep their full detail.</summary>
    private static (ExitCode Code, string Message) Describe(Exception e) => e switch
    {
        DiffKeeperException d => (d.Code, d.Message),
        CatalogException { ErrorCode: 11 or 26 } c => (ExitCode.Corrupt, $"the catalog is damaged ({c.Message}); 'diffkeeper verify' tells what is left"),
        BlobMissingException m => (ExitCode.Corrupt, $"the trace is damaged: {m.Message}; 'diffkeeper verify' tells what is left"),
        CatalogException c => (ExitCode.SystemError, $"the catalog failed: {c.Message}"),
        _ when OsError.IsOsFailure(e) => (ExitCode.SystemError, PathIn(e) is { } path
            ? OsError.At(e, "use", path).Message
            : $"an operating system call failed: {OsError.Reason(e)}"),
        _ => (ExitCode.Failure, $"unexpected failure: {e}"),
    };

    /// <summary>
    /// An anticipated error is one line of bounded length whatever a trace holds (a crafted path or link target can
    /// be megabytes long): its middle is cut. An unexpected failure keeps its full detail.
    /// </summary>
    internal static string Bounded(string message, ExitCode code)
    {
        const int Max = 1000;
        if (code == ExitCode.Failure)
        {
            return message;
        }

        message = message.Replace("\n", "\\n", StringComparison.Ordinal).Replace("\r", "\\r", StringComparison.Ordinal);
        if (message.Length <= Max)
        {
            return message;
        }

        return $"{message[..(Max / 2)]} [... {message.Length - Max} characters left out ...] {message[^(Max / 2)..]}";
    }

    /// <summary>
    /// The path a .NET I/O exception is about. Commands map failures where they know the path; this is the last
    /// resort for one that escaped, and .NET keeps the path only in its message text (in single quotes) except
    /// for FileNotFoundException.
    /// </summary>
    private static string? PathIn(Exception e) =>
        e is FileNotFoundException { FileName: { Length: > 0 } f } ? f
        : QuotedPath().Match(e.Message) is { Success: true } m ? m.Groups[1].Value
        : null;

    [GeneratedRegex("'(/[^']*)'")]
    private static partial Regex QuotedPath();
}
