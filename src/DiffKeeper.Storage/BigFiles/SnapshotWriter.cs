using System.Diagnostics;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>What one file of a snapshot cost.</summary>
public sealed record SnapshotFile(string Name, long Size, long BytesRead, int PiecesChanged, long StoredBytes, long VersionId, string? ParentVersion)
{
    /// <summary>Pieces found equal to the parent's by their fingerprint alone (docs/store-format.md, "Block fingerprints").</summary>
    public int PiecesByFingerprint { get; init; }

    internal long? ParentVersionId { get; init; }

    internal byte[] ContentId { get; init; } = [];

    internal IReadOnlyList<BlockPiece> Pieces { get; init; } = [];
}

/// <summary>One snapshot taken: its id (a session id of the store), its parent, its files.</summary>
public sealed record SnapshotResult(long Id, long? Parent, IReadOnlyList<SnapshotFile> Files, long StoredBytes, long ElapsedMs);

/// <summary>
/// Takes a snapshot of files into a store (docs/store-format.md, "Snapshot sessions"): every snapshot is complete (a
/// block map of each whole file), made by comparing the files with the parent's versions block by block, or, for
/// diff-snapshot input, by merging the files' data extents onto the parent's. The session, its versions and its end
/// commit in one transaction, after the pack is fsynced: a crash leaves no session at all (its pack, committed by
/// nobody, is deleted by the next writer). The pack's fsync runs on another thread while the catalog rows and each
/// version's block fingerprints (<see cref="FingerprintCache"/>, for the next snapshot) are written; the commit waits
/// for it. <c>verifyAll</c> compares every block by SHA-256 instead of trusting the parent's fingerprints.
/// </summary>
public static class SnapshotWriter
{
    public const string Capture = "snapshot";

    /// <param name="alignChanged">Store changed blocks that compress badly raw in aligned groups (<see cref="TraceWriter.AlignsChangedBlocks"/>);
    /// false writes them as before (tests of stores written so).</param>
    public static SnapshotResult Take(string storeDir, IReadOnlyList<string> files, long? parentId, bool diffInput, string command, bool verifyAll = false,
        bool alignChanged = true)
    {
        var sw = Stopwatch.StartNew();
        var full = files.Select(f => Path.GetFullPath(f)).ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var f in full)
        {
            var name = Path.GetFileName(f);
            if (name.Length == 0 || !names.Add(name))
            {
                throw new DiffKeeperException(ExitCode.Usage, $"two files named '{name}' in one snapshot: a snapshot names its files by base name; snapshot them separately");
            }
        }

        if (diffInput && parentId is null)
        {
            throw new DiffKeeperException(ExitCode.Usage, "--diff needs --parent: a diff snapshot holds only the changed pages, merged onto its parent");
        }

        foreach (var f in full)
        {
            // Every input checked before the session begins: a missing file is refused, not half a snapshot.
            if (!File.Exists(f))
            {
                throw new DiffKeeperException(ExitCode.NotFound, $"{f} does not exist or is not a file; snapshot takes files");
            }
        }

        using var writer = TraceWriter.Open(storeDir);
        writer.WritesLargeRecordsDirect = true; // its blocks' records, ~60 KiB each, are not copied into the pack's buffer
        writer.AlignsChangedBlocks = alignChanged;
        var seed = FingerprintCache.Seed(storeDir);
        Dictionary<string, VersionRecord>? parent = null;
        TraceReader? reader = null;
        try
        {
            if (parentId is { } pid)
            {
                reader = TraceReader.Over(writer);
                var session = reader.Session(pid);
                if (session.Capture != Capture)
                {
                    throw new DiffKeeperException(ExitCode.NotFound, $"session {pid} of {storeDir} is a recording, not a snapshot; --parent takes a snapshot id");
                }

                if (session.State != "finished")
                {
                    throw new DiffKeeperException(ExitCode.NotFound, $"snapshot {pid} of {storeDir} is {session.State}: its writer did not finish it; choose a finished snapshot as --parent");
                }

                parent = reader.StateAt(session, long.MaxValue).Where(v => v.Kind == EntryKind.File).ToDictionary(v => v.Rel, StringComparer.Ordinal);
            }

            var roots = full.Select(f => Path.GetDirectoryName(f)!).Distinct(StringComparer.Ordinal).ToList();
            var startNs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000L;
            var sessionId = writer.BeginSession(command, Environment.CurrentDirectory, Capture, startNs, roots, out var rootIds, commit: false);
            var results = new List<SnapshotFile>();
            long seq = 0;
            foreach (var path in full)
            {
                seq++;
                var name = Path.GetFileName(path);
                var rootId = rootIds[roots.IndexOf(Path.GetDirectoryName(path)!)];
                var before = parent?.GetValueOrDefault(name);
                if (diffInput && before is null)
                {
                    throw new DiffKeeperException(ExitCode.NotFound, $"snapshot {parentId} has no file '{name}' to merge the diff snapshot {path} onto");
                }

                results.Add(TakeFile(writer, reader, storeDir, seed, verifyAll, sessionId, rootId, seq, startNs, path, name, before, diffInput,
                    last: seq == full.Count));
            }

            // While the pack's fsync runs (StartSync, after the last file's blocks): a fingerprint file before its
            // version commits is harmless, since it is used only for a version of the same id and content id, whose
            // bytes it describes whichever transaction wrote that version.
            foreach (var r in results)
            {
                FingerprintCache.Write(storeDir, r.VersionId, r.ContentId, seed, r.Pieces);
            }

            writer.FinishSession(sessionId, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000L - startNs, 0, 0);
            foreach (var r in results)
            {
                if (r.ParentVersionId is { } compared)
                {
                    FingerprintCache.Remove(storeDir, compared); // a chain keeps its newest version's fingerprints only
                }
            }

            return new SnapshotResult(sessionId, parentId, results, results.Sum(r => r.StoredBytes), sw.ElapsedMilliseconds);
        }
        finally
        {
            reader?.Dispose();
        }
    }

    private static SnapshotFile TakeFile(TraceWriter writer, TraceReader? reader, string storeDir, long seed, bool verifyAll,
        long sessionId, long rootId, long seq, long startNs, string path, string name, VersionRecord? before, bool diffInput, bool last)
    {
        if (Libc.StatxCall(Libc.AT_FDCWD, path, 0, Libc.STATX_BASIC_STATS, out var st) != 0)
        {
            throw OsError.At(System.Runtime.InteropServices.Marshal.GetLastPInvokeError(), "read", path);
        }

        if ((st.Mode & Libc.S_IFMT) != Libc.S_IFREG)
        {
            throw new DiffKeeperException(ExitCode.Usage, $"{path} is not a regular file; snapshot takes files");
        }

        BlockIngestResult result;
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            var size = (long)st.Size;
            if (diffInput)
            {
                // Every data extent of a diff file overwrites the parent. Until writeback, xfs may report the ranges
                // around fresh writes (its speculative allocation) as data, which would merge zeros over the
                // parent's pages: the file's extents are asked for once it is written back.
                Libc.Fsync((int)handle.DangerousGetHandle());
            }

            var previous = before?.Extents is { } ext && before.ContentId is { } parentContent
                ? FingerprintCache.Previous(writer, storeDir, before.Id, parentContent, seed, ext, before.Size, trust: !verifyAll)
                : null;

            result = diffInput
                ? BlockIngest.MergeDiff(writer, reader!, handle, size, previous ?? [], before!.Size, seed, !verifyAll)
                : BlockIngest.IngestFile(writer, handle, size, previous, seed: seed, trustFingerprints: !verifyAll);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "read", path);
        }

        if (last)
        {
            writer.StartSync(); // no more blocks: the disk works while the rows below are added
        }

        var pathId = writer.PathId(rootId, name);
        var timeNs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000L - startNs;
        writer.AddEvent(sessionId, new NewEvent(seq, timeNs, ChangeOp.Write, pathId, null, result.Content.Size, null, null, diffInput ? "diff snapshot" : null));
        var versionId = writer.AddVersion(sessionId, new NewVersion(pathId, seq, timeNs, EntryKind.File, st.Mode & 0xFFF, (int)st.Uid, (int)st.Gid,
            st.MtimeNs, result.Content.Size, result.Content.ContentId, null, result.Content.Extents));
        return new SnapshotFile(name, result.Content.Size, result.BytesRead, result.PiecesChanged, result.Content.StoredBytes, versionId,
            before is null ? null : before.Id.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            PiecesByFingerprint = result.PiecesByFingerprint,
            ParentVersionId = before?.Id,
            ContentId = result.Content.ContentId,
            Pieces = result.Pieces,
        };
    }
}
