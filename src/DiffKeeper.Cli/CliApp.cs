using System.CommandLine;
using DiffKeeper.Cli.Commands;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli;

/// <summary>Assembles the commands and turns anticipated failures into one line and an exit code.</summary>
public static class CliApp
{
    public static RootCommand Build(IConsole console) => new("""
        DiffKeeper: a flight recorder and time machine for the files of a process tree.
        Record what a command does to its files, list it as a timeline, rebuild the tree as it was at any moment.
        Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 no trace, 4 trace locked, 5 trace damaged,
        6 output not empty, 7 unsafe path in trace, 8 not found, 9 newer store format, 10 system error;
        'record' exits with the command's own code (126/127 when it cannot run).
        """)
    {
        RecordCommand.Create(console),
        TimelineCommand.Create(console),
        ExportCommand.Create(console),
        LogCommand.Create(console),
        ShowCommand.Create(console),
        VerifyCommand.Create(console),
        SessionsCommand.Create(console),
        StatsCommand.Create(console),
    };

    public static async Task<int> RunAsync(string[] args, IConsole console)
    {
        var parse = Build(console).Parse(args);
        if (parse.Errors.Count > 0)
        {
            var name = parse.CommandResult.Command.Parents.Any() ? "diffkeeper " + parse.CommandResult.Command.Name : "diffkeeper";
            console.Error.WriteLine($"diffkeeper: {string.Join("; ", parse.Errors.Select(e => e.Message.TrimEnd('.')))} (see '{name} --help')");
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
        catch (DiffKeeperException e)
        {
            console.Out.Flush();
            console.Error.WriteLine($"diffkeeper: {e.Message}");
            return (int)e.Code;
        }
        catch (CatalogException e) when (e.ErrorCode is 11 or 26)
        {
            console.Error.WriteLine($"diffkeeper: the catalog is damaged ({e.Message}); 'diffkeeper verify' tells what is left");
            return (int)ExitCode.Corrupt;
        }
        catch (UnauthorizedAccessException e)
        {
            console.Error.WriteLine($"diffkeeper: permission denied: {e.Message}");
            return (int)ExitCode.SystemError;
        }
        catch (IOException e)
        {
            console.Error.WriteLine($"diffkeeper: {e.Message}");
            return (int)ExitCode.SystemError;
        }
        catch (CatalogException e)
        {
            console.Error.WriteLine($"diffkeeper: the catalog failed: {e.Message}");
            return (int)ExitCode.SystemError;
        }
        catch (Exception e)
        {
            // Unexpected: keep the full detail, but exit 1 as documented rather than abort.
            console.Error.WriteLine($"diffkeeper: unexpected failure: {e}");
            return (int)ExitCode.Failure;
        }
        finally
        {
            console.Out.Flush();
        }
    }
}
