using System.Text;
using DiffKeeper.Cli;
using DiffKeeper.Cli.Rendering;

// `--version` alone is answered before the command tree is built: scripts and health checks call it
// often, and it should cost what a process start costs.
if (args is ["--version"])
{
    var version = BuildVersion.Informational;
    using var stdout = new SystemConsole().OpenStandardOutput(); // not Console's: it would set up the terminal
    stdout.Write(Encoding.UTF8.GetBytes(version + "\n"));
    return 0;
}

return await CliApp.RunAsync(RawArguments.Recover(args), new SystemConsole()).ConfigureAwait(false);
