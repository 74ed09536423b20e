using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Replay;

/// <summary>What an export wrote.</summary>
public sealed record ExportResult(long Seq, int Files, int Directories, int Symlinks, long Bytes);

/// <summary>How far a tree is written: entries written of <see cref="Total"/>, file bytes so far.</summary>
public readonly record struct TreeProgress(int Done, int Total, long Bytes);

/// <summary>
/// Rebuilds the watched trees of a session as they were right after one event. Builds into a sibling temp
/// directory through <see cref="SafeTreeWriter"/> (nothing is ever written outside it), then renames it into
/// place; an interrupted export leaves only a ".*.dk-tmp-*" sibling, never a half-written output. With one root
/// the output is the root; with several, each root appears under its absolute path.
/// </summary>
public static class Materializer
{
    public static ExportResult Export(TraceReader reader, SessionInfo session, long seq, string outDir, bool force, Func<string, bool>? include = null,
        IProgress<TreeProgress>? progress = null)
    {
        outDir = Path.GetFullPath(outDir).TrimEnd('/');
        if (outDir.Length == 0)
        {
            throw new DiffKeeperException(ExitCode.Usage, "refusing to export onto /; choose an empty directory with --out");
        }

        string temp;
        Microsoft.Win32.SafeHandles.SafeFileHandle busy;
        try
        {
            CheckOutput(outDir, force);
            var parent = Path.GetDirectoryName(outDir)!;
            Directory.CreateDirectory(parent);
            RemoveAbandoned(parent, Path.GetFileName(outDir));
            temp = Path.Combine(parent, $"{TempPrefix(Path.GetFileName(outDir))}{Guid.NewGuid():N}"[..^20]);
            Directory.CreateDirectory(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            busy = LockDirectory(temp, wait: true) ?? throw new IOException($"cannot lock {temp}");
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            // The temporary sibling's name means nothing to the user: name --out.
            throw OsError.At(e, "export to", outDir);
        }

        try
        {
            return Build(reader, session, seq, temp, outDir, include, progress);
        }
        finally
        {
            busy.Dispose();
        }
    }

    private static string TempPrefix(string outName) => $".{outName}.dk-tmp-";

    /// <summary>
    /// Removes the temporary trees (and moved-aside old outputs) that interrupted exports to the same --out left
    /// beside it (SIGKILL runs no cleanup). An export holds an flock on its temporary directory while it works, so
    /// a tree whose lock can be taken belongs to no running export.
    /// </summary>
    private static void RemoveAbandoned(string parent, string outName)
    {
        foreach (var dir in Directory.EnumerateDirectories(parent, TempPrefix(outName) + "*"))
        {
            using var held = LockDirectory(dir, wait: false);
            if (held is not null)
            {
                TryDelete(dir);
            }
        }
    }

    /// <summary>An flock on the directory itself (never following a symlink); null when another process holds it or it is gone.</summary>
    private static Microsoft.Win32.SafeHandles.SafeFileHandle? LockDirectory(string dir, bool wait)
    {
        var fd = Libc.Open(dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return null;
        }

        var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        if (Libc.Flock(fd, Libc.LOCK_EX | (wait ? 0 : Libc.LOCK_NB)) != 0)
        {
            handle.Dispose();
            return null;
        }

        return handle;
    }

    private static ExportResult Build(TraceReader reader, SessionInfo session, long seq, string temp, string outDir, Func<string, bool>? include,
        IProgress<TreeProgress>? progress)
    {
        try
        {
            ExportResult result;
            using (var tree = SafeTreeWriter.Open(temp))
            {
                result = WriteTree(reader, session, seq, tree, include, progress);
            }

            // The root's own mode is not recorded: give it what mkdir would.
            var umask = Libc.Umask(0);
            Libc.Umask(umask);
            File.SetUnixFileMode(temp, (UnixFileMode)(0x1ED & ~umask));

            Publish(temp, outDir);
            return result;
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            TryDelete(temp);
            throw OsError.At(e, "export to", outDir);
        }
        catch
        {
            TryDelete(temp);
            throw;
        }
    }

    /// <summary>The state after event <paramref name="seq"/>, as output-relative paths, checked for safety and consistency.</summary>
    public static List<(string Path, VersionRecord Version)> Plan(TraceReader reader, SessionInfo session, long seq)
    {
        var entries = new List<(string Path, VersionRecord Version)>();
        foreach (var v in reader.StateAt(session, seq))
        {
            var path = v.Rel;
            if (session.Roots.Count > 1)
            {
                var root = session.Roots.FirstOrDefault(r => r.Id == v.RootId)?.Path.Trim('/')
                    ?? throw new DiffKeeperException(ExitCode.Corrupt,
                        $"the catalog is damaged: version {v.Id} lies in root {v.RootId}, which is not a root of session {session.Id}; 'diffkeeper verify' lists every damaged row");
                path = root.Length == 0 ? v.Rel : root + "/" + v.Rel;
            }

            entries.Add((TracePath.Validate(path), v));
        }

        entries.Sort((a, b) => PathBytes.ByteOrder.Compare(a.Path, b.Path));
        var kinds = new Dictionary<string, EntryKind>(entries.Count, StringComparer.Ordinal);
        foreach (var (path, v) in entries)
        {
            if (!kinds.TryAdd(path, v.Kind))
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"the trace has two entries for '{PathBytes.Display(path)}' at that moment (it is damaged or crafted)") { Path = path };
            }
        }
        foreach (var (path, _) in entries)
        {
            for (var p = TracePath.Parent(path); p.Length > 0; p = TracePath.Parent(p))
            {
                if (kinds.TryGetValue(p, out var k) && k != EntryKind.Directory)
                {
                    throw new DiffKeeperException(ExitCode.UnsafePath,
                        $"refusing to export: the trace puts '{PathBytes.Display(path)}' below '{PathBytes.Display(p)}', which is a {k.ToString().ToLowerInvariant()} at that moment (the trace is damaged or crafted)")
                    { Path = path };
                }
            }
        }

        return entries;
    }

    /// <summary>
    /// Writes the state after event <paramref name="seq"/> below <paramref name="tree"/> (which should be empty),
    /// re-hashing every blob it reads; directory modes and mtimes are applied last. With <paramref name="include"/>,
    /// only the entries it accepts (by output-relative path) and the directories above them are written; those
    /// directories keep their recorded modes and mtimes.
    /// </summary>
    /// <param name="progress">Told after each entry, on this thread.</param>
    public static ExportResult WriteTree(TraceReader reader, SessionInfo session, long seq, SafeTreeWriter tree, Func<string, bool>? include = null,
        IProgress<TreeProgress>? progress = null)
    {
        var entries = Plan(reader, session, seq);
        if (include is not null)
        {
            entries = Subset(entries, include);
        }

        // Hard links: the names of one file share a link id; the file is written once, from the newest of their
        // versions (a writer gives them all the same one), and the other names are linked to it.
        var linkSource = new Dictionary<long, VersionRecord>();
        foreach (var (_, v) in entries)
        {
            if (v is { Kind: EntryKind.File, Link: { } id } && (!linkSource.TryGetValue(id, out var seen) || seen.Id < v.Id))
            {
                linkSource[id] = v;
            }
        }

        // In path order on this thread: directories and symlinks, and the list of files; then the files' contents
        // on every core (TreeFileWriter), then the other names of hard-linked files, then directory metadata.
        var made = new HashSet<string>(StringComparer.Ordinal);
        var linkWritten = new Dictionary<long, string>();
        var files = new List<(string Path, VersionRecord Version)>(entries.Count);
        var hardLinks = new List<(string Existing, string Path)>();
        int dirs = 0, links = 0;
        foreach (var (path, entry) in entries)
        {
            var v = entry;
            EnsureParents(tree, path, made);
            switch (v.Kind)
            {
                case EntryKind.Directory:
                    tree.CreateDirectory(path);
                    made.Add(path);
                    dirs++;
                    break;
                case EntryKind.File when v.Link is { } linkId && linkWritten.TryGetValue(linkId, out var first):
                    hardLinks.Add((first, path));
                    continue;
                case EntryKind.File:
                    if (v.Link is { } newLink)
                    {
                        linkWritten[newLink] = path;
                        v = linkSource[newLink];
                    }

                    files.Add((path, v));
                    continue;
                case EntryKind.Symlink:
                    tree.CreateSymlink(path, v.Target ?? "");
                    tree.SetSymlinkMtime(path, v.MtimeNs);
                    links++;
                    break;
            }

            progress?.Report(new TreeProgress(dirs + links, entries.Count, 0));
        }

        var bytes = TreeFileWriter.Write(reader, session, tree, files,
            progress is null ? null : (done, written) => progress.Report(new TreeProgress(dirs + links + done, entries.Count, written)));
        for (var i = 0; i < hardLinks.Count; i++)
        {
            tree.CreateHardLink(hardLinks[i].Existing, hardLinks[i].Path);
            progress?.Report(new TreeProgress(dirs + links + files.Count + i + 1, entries.Count, bytes));
        }

        // Directory modes and mtimes last, deepest first: writing children changes a directory's mtime, and a
        // read-only mode would stop the writes.
        foreach (var (path, v) in entries.Where(e => e.Version.Kind == EntryKind.Directory).OrderByDescending(e => e.Path.Count(c => c == '/')))
        {
            tree.SetDirectoryMetadata(path, v.Mode, v.MtimeNs);
        }

        return new ExportResult(seq, files.Count + hardLinks.Count, dirs, links, bytes);
    }

    /// <summary>The entries <paramref name="include"/> accepts and the recorded directories above them, in order.</summary>
    public static List<(string Path, VersionRecord Version)> Subset(List<(string Path, VersionRecord Version)> entries, Func<string, bool> include)
    {
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (path, _) in entries)
        {
            if (include(path))
            {
                for (var p = path; p.Length > 0 && wanted.Add(p); p = TracePath.Parent(p))
                {
                }
            }
        }

        return entries.Where(e => wanted.Contains(e.Path)).ToList();
    }

    private static void EnsureParents(SafeTreeWriter tree, string path, HashSet<string> made)
    {
        var parent = TracePath.Parent(path);
        if (parent.Length == 0 || made.Contains(parent))
        {
            return;
        }

        EnsureParents(tree, parent, made);
        tree.CreateDirectory(parent);
        made.Add(parent);
    }

    private static void CheckOutput(string outDir, bool force)
    {
        if (File.Exists(outDir) || (Directory.Exists(outDir) && new FileInfo(outDir).LinkTarget is not null))
        {
            throw new DiffKeeperException(ExitCode.OutputExists, $"{outDir} exists and is not a directory; choose another --out");
        }

        if (!force && Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            throw new DiffKeeperException(ExitCode.OutputExists, $"{outDir} is not empty; choose an empty or new directory, or pass --force to replace it");
        }
    }

    private static void Publish(string temp, string outDir)
    {
        if (!Directory.Exists(outDir))
        {
            Rename(temp, outDir);
            return;
        }

        var trash = temp + ".old";
        Rename(outDir, trash);
        Rename(temp, outDir);
        TryDelete(trash);
    }

    private static void Rename(string from, string to)
    {
        if (Libc.RenameAt(Libc.AT_FDCWD, from, Libc.AT_FDCWD, to) != 0)
        {
            var errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot move {from} to {to}: {Libc.StrError(errno)}");
        }
    }

    // Removed through descriptors: names that are not UTF-8 and trees deeper than PATH_MAX go too, and recorded
    // read-only directory modes would stop a non-root user from removing a temp or old tree.
    internal static void TryDelete(string dir) => LongPath.RemoveTree(dir);
}
