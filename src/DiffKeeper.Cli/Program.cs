using DiffKeeper.Cli;
using DiffKeeper.Cli.Rendering;

return await CliApp.RunAsync(args, new SystemConsole()).ConfigureAwait(false);
