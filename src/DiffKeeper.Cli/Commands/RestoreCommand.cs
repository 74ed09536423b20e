using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Replay;

namespace DiffKeeper.Cli.Commands;

internal static class RestoreCommand
{
    public static Command Create(IConsole console)
    {
        var stateDir = KeepCommandOptions.StateDir();
        var store = KeepCommandOptions.Store();
        var onExisting = KeepCommandOptions.OnExisting();
        var cmd = new Command("restore", """
            Put the latest recorded state of a store into the state directory (the init container's job).
            Every file is verified (blob hashes, content ids) before anything in the directory changes; then each
            top-level entry is renamed into place, so none appears half-written. Directories get their recorded
            modes; paths deleted in the recorded state are absent. Never writes outside --state-dir.
            A missing or empty store means nothing to restore: exit 0 with a line saying so.
            Example: diffkeeper restore --state-dir /data --store /deltas
            """)
        {
            stateDir, store, onExisting,
        };
        cmd.SetAction(pr =>
        {
            var (state, st) = KeepCommandOptions.Resolve(pr.GetValue(stateDir)!, pr.GetValue(store)!);
            var result = StateRestorer.Restore(st, state, pr.GetValue(onExisting));
            console.Error.WriteLine(KeepCommandOptions.Describe(result, state, st));
            return 0;
        });
        return cmd;
    }
}
