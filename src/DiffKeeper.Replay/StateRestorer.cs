using System.Diagnostics;
using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Replay;

/// <summary>What to do when the state directory already holds something.</summary>
public enum ExistingStatePolicy
{
    /// <summary>Leave the directory as it is and restore nothing: it survived (a container restart) and is newer than the store.</summary>
    Keep,
    /// <summary>Make the directory equal to the recorded state: recorded entries replace existing ones, others are removed.</summary>
    Overwrite,
    /// <summary>Refuse (exit code 6).</summary>
    Fail,
}

/// <summary>What a restore did. <see cref="SessionId"/> is null when there was nothing to restore.</summary>
public sealed record RestoreResult(long? SessionId, int Files, int Directories, int Symlinks, long Bytes, int VersionsVerified, TimeSpan Elapsed, bool KeptExisting);

/// <summary>
/// Puts the latest recorded state of a keep-mode store into a state directory (the init container's job).
/// The state is built and verified (every blob re-hashed, every content id checked) in a hidden directory inside
/// the state directory, so on the same file system; then each top-level entry is renamed into place, so each
/// appears whole or not at all, and the directory itself may be a mount point. Never writes outside the state
/// directory (<see cref="SafeTreeWriter"/>). A restore interrupted by a crash leaves a hidden
/// <c>.diffkeeper-restore-*</c> directory; the next restore removes it and overwrites what the interrupted one
/// had moved in.
/// </summary>
public static class StateRestorer
{
    public const string TempPrefix = ".diffkeeper-restore-";

    /// <summary>
    /// The session whose state is the latest restorable one: the newest whose baseline was committed. A keep-mode
    /// session keeps <see cref="SessionInfo.StartedWallNs"/> at 0 until its baseline commits (docs/store-format.md).
    /// </summary>
    public static SessionInfo? LatestRestorable(TraceReader reader) =>
        reader.Sessions().LastOrDefault(s => s.StartedWallNs != 0 && s.Roots.Count == 1);

    public static RestoreResult Restore(string storeDir, string stateDir, ExistingStatePolicy policy, IProgress<TreeProgress>? progress = null)
    {
        var sw = Stopwatch.StartNew();
        stateDir = Path.GetFullPath(stateDir).TrimEnd('/');
        if (stateDir.Length == 0)
        {
            throw new DiffKeeperException(ExitCode.Usage, "refusing to restore onto /; give the app's state directory with --state-dir");
        }

        if (File.Exists(stateDir))
        {
            throw new DiffKeeperException(ExitCode.OutputExists, $"--state-dir {stateDir} is a file, not a directory");
        }

        if (File.Exists(storeDir))
        {
            // A store that is a file is a mistake in the command line (a first start's missing store is a directory
            // not made yet): saying "nothing to restore" would start the app empty over it.
            throw new DiffKeeperException(ExitCode.Usage, $"--store {storeDir} is a file, not a store directory");
        }

        if (!File.Exists(Path.Combine(storeDir, "catalog.db")))
        {
            return new RestoreResult(null, 0, 0, 0, 0, 0, sw.Elapsed, false);
        }

        using var reader = TraceReader.Open(storeDir);
        using var snapshot = reader.Snapshot(rememberBlobs: true);
        var session = LatestRestorable(reader);
        if (session is null)
        {
            return new RestoreResult(null, 0, 0, 0, 0, 0, sw.Elapsed, false);
        }

        Directory.CreateDirectory(stateDir);
        var interrupted = RemoveStaleTemps(stateDir);
        var existing = LongPath.Names(stateDir) ?? [];
        if (existing.Count > 0 && !interrupted)
        {
            if (policy == ExistingStatePolicy.Fail)
            {
                throw new DiffKeeperException(ExitCode.OutputExists,
                    $"--state-dir {stateDir} is not empty; empty it, or pass --on-existing keep (use it as it is) or overwrite (replace it with the recorded state)");
            }

            if (policy == ExistingStatePolicy.Keep)
            {
                return new RestoreResult(session.Id, 0, 0, 0, 0, 0, sw.Elapsed, true);
            }
        }

        var temp = Path.Combine(stateDir, TempPrefix + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        try
        {
            var built = Path.Combine(temp, "new");
            var trash = Path.Combine(temp, "old");
            Directory.CreateDirectory(built, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            Directory.CreateDirectory(trash, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            ExportResult written;
            using (var tree = SafeTreeWriter.Open(built))
            {
                written = Materializer.WriteTree(reader, session, long.MaxValue, tree, progress: progress);
            }

            // Everything is built and verified: only now is the directory changed, one top-level entry at a time.
            var names = (LongPath.Names(built) ?? []).Order(StringComparer.Ordinal).ToList();
            var keep = names.ToHashSet(StringComparer.Ordinal);
            foreach (var name in existing.Where(n => !keep.Contains(n)))
            {
                Rename(Path.Combine(stateDir, name), Path.Combine(trash, name)); // deleted in the recorded state
            }

            foreach (var name in names)
            {
                var target = Path.Combine(stateDir, name);
                if (existing.Contains(name))
                {
                    Rename(target, Path.Combine(trash, name));
                }

                Rename(Path.Combine(built, name), target);
            }

            return new RestoreResult(session.Id, written.Files, written.Directories, written.Symlinks, written.Bytes, written.Files, sw.Elapsed, false);
        }
        finally
        {
            Materializer.TryDelete(temp);
        }
    }

    /// <summary>Removes what an interrupted restore left; true when there was such a leftover.</summary>
    private static bool RemoveStaleTemps(string stateDir)
    {
        var found = false;
        foreach (var dir in Directory.EnumerateDirectories(stateDir, TempPrefix + "*"))
        {
            found = true;
            Materializer.TryDelete(dir);
        }

        return found;
    }

    private static void Rename(string from, string to)
    {
        if (Libc.RenameAt(Libc.AT_FDCWD, from, Libc.AT_FDCWD, to) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot move {from} to {to}: {Libc.StrError(errno)}");
        }
    }
}
