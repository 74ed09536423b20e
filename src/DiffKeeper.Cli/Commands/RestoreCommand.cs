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
        var json = new Option<bool>("--json") { Description = "Print the summary as one JSON object on stdout: restored, session, state_dir, store, files, directories, symlinks, bytes, versions_verified, elapsed_ms, kept_existing" };
        var cmd = new Command("restore", """
            Put the latest recorded state of a store into the state directory (the init container's job).
            Every file is verified (blob hashes, content ids) before anything in the directory changes; then each
            top-level entry is renamed into place, so none appears half-written. Directories get their recorded
            modes; paths deleted in the recorded state are absent. Never writes outside --state-dir.
            A missing or empty store means nothing to restore: exit 0 with a line saying so.
            Example: diffkeeper restore --state-dir /data --store /deltas
            """)
        {
            stateDir, store, onExisting, json,
        };
        cmd.SetAction(pr =>
        {
            var (state, st) = KeepCommandOptions.Resolve(pr.GetValue(stateDir)!, pr.GetValue(store)!);
            RestoreResult result;
            using (var progress = TerminalProgress.ForStderr(console))
            {
                result = StateRestorer.Restore(st, state, pr.GetValue(onExisting), progress.Tree("restore"));
            }

            if (!pr.GetValue(json))
            {
                console.Error.WriteLine(KeepCommandOptions.Describe(result, state, st));
                return 0;
            }

            JsonSummary.ToStdout(console, j =>
            {
                j.WriteBoolean("restored", result.SessionId is not null && !result.KeptExisting);
                if (result.SessionId is { } id)
                {
                    j.WriteNumber("session", id);
                }
                else
                {
                    j.WriteNull("session");
                }

                j.WriteString("state_dir", state);
                j.WriteString("store", st);
                j.WriteNumber("files", result.Files);
                j.WriteNumber("directories", result.Directories);
                j.WriteNumber("symlinks", result.Symlinks);
                j.WriteNumber("bytes", result.Bytes);
                j.WriteNumber("versions_verified", result.VersionsVerified);
                j.WriteNumber("elapsed_ms", Math.Round(result.Elapsed.TotalMilliseconds, 1));
                j.WriteBoolean("kept_existing", result.KeptExisting);
            });
            return 0;
        });
        return cmd;
    }
}
