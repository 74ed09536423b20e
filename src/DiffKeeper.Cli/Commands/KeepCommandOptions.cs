using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Replay;

namespace DiffKeeper.Cli.Commands;

/// <summary>The options `run` and `restore` share, and the restore summary line both print.</summary>
internal static class KeepCommandOptions
{
    public static Option<string> StateDir() => new("--state-dir")
    {
        Description = "The app's state directory (in Kubernetes: an emptyDir)",
        Required = true,
        HelpName = "DIR",
    };

    public static Option<string> Store() => new("--store")
    {
        Description = "The store that keeps the state's history (in Kubernetes: a small persistent volume); created when missing",
        Required = true,
        HelpName = "DIR",
    };

    public static Option<ExistingStatePolicy> OnExisting() => new("--on-existing")
    {
        Description = "When --state-dir is not empty: keep it as it is and restore nothing (it survived, so it is newer than the store), " +
            "overwrite it with the recorded state (entries not recorded are removed), or fail (exit 6)",
        DefaultValueFactory = _ => ExistingStatePolicy.Keep,
        HelpName = "keep|overwrite|fail",
        CustomParser = r => r.Tokens.Single().Value switch
        {
            "keep" => ExistingStatePolicy.Keep,
            "overwrite" => ExistingStatePolicy.Overwrite,
            "fail" => ExistingStatePolicy.Fail,
            var v => Invalid(r, v),
        },
    };

    private static ExistingStatePolicy Invalid(System.CommandLine.Parsing.ArgumentResult r, string value)
    {
        r.AddError($"--on-existing '{value}' is not one of keep, overwrite, fail");
        return ExistingStatePolicy.Keep;
    }

    /// <summary>Absolute paths; refuses a store inside the state directory and the other way round (a restore would replace one with the other).</summary>
    public static (string StateDir, string Store) Resolve(string stateDir, string store)
    {
        var state = Path.GetFullPath(stateDir).TrimEnd('/');
        var st = Path.GetFullPath(store).TrimEnd('/');
        if (state.Length == 0 || st.Length == 0)
        {
            throw new DiffKeeperException(ExitCode.Usage, "--state-dir and --store cannot be /");
        }

        if (TracePath.IsAtOrBelow(st, state) || TracePath.IsAtOrBelow(state, st))
        {
            throw new DiffKeeperException(ExitCode.Usage, $"--store {st} and --state-dir {state} must not contain each other; put the store on its own volume");
        }

        return (state, st);
    }

    public static string Describe(RestoreResult r, string stateDir, string store) => r switch
    {
        { SessionId: null } => $"diffkeeper: nothing to restore: the store {store} holds no recorded state yet; {stateDir} is left as it is",
        { KeptExisting: true } => $"diffkeeper: {stateDir} is not empty: kept as it is, nothing restored (--on-existing keep)",
        _ => $"diffkeeper: restored session {r.SessionId} into {stateDir}: {r.Files} files ({TimelineRenderer.FormatSize(r.Bytes)}), " +
             $"{r.Directories} directories, {r.Symlinks} symlinks in {r.Elapsed.TotalMilliseconds:0.0} ms; {r.VersionsVerified} versions verified",
    };
}
