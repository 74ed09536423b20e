using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
using DiffKeeper.Storage.Catalog;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Replay.BigFiles;

/// <summary>How one file of a materialization was made.</summary>
public sealed record MaterializedFile(string Name, long Size, bool Cloned, long BytesWritten, long BytesPunched, long BytesCloned = 0);

/// <summary>What a materialization published.</summary>
/// <param name="BlockCopyReason">Why changed blocks that lie aligned in the store's packs were written rather than cloned
/// from them (the pack on another file system, one that cannot share extents), or null.</param>
public sealed record MaterializeResult(long Id, string OutDir, string? BaseDir, IReadOnlyList<MaterializedFile> Files, string? CopyReason,
    int StaleRemoved, long ElapsedMs, string? BlockCopyReason = null);

/// <summary>
/// Publishes a snapshot as a directory of complete files, the Firecracker diff-snapshot way (docs/store-format.md,
/// "Materialized directories"): where an earlier materialization of the same store is on the same file system and
/// unchanged since, each file is a reflink clone of it (FICLONE) with only the extents that differ written
/// (pwrite) and the extents that became holes punched; otherwise the file is written from the store with its holes.
/// Rules kept: positioned I/O only; the base is never written (the clone is a new file); everything is built in a
/// uniquely named sibling directory, fsynced (files, marker, directory), then renamed into place or exchanged
/// with the old output (renameat2 RENAME_EXCHANGE), so DIR is at every instant the old complete output or the new
/// one; a sibling left by a killed run is removed by the next.
/// </summary>
public static class SnapshotMaterializer
{
    public const string MarkerName = ".diffkeeper-snapshot";
    private const string TempInfix = ".dk-snap-";

    public static MaterializeResult Materialize(TraceReader reader, long id, string outDir, string? baseDir)
    {
        var sw = Stopwatch.StartNew();
        outDir = Path.GetFullPath(outDir).TrimEnd('/');
        if (outDir.Length == 0)
        {
            throw new DiffKeeperException(ExitCode.Usage, "refusing to materialize onto /; choose a directory with --out");
        }

        // One read transaction for every query of the catalog: each statement outside one is a transaction of its own,
        // and W4's ~210 look-ups of changed blocks' rows took a lock, an fstat and an unlock of the catalog each
        // (~630 system calls). It also makes the materialization read one committed state of the store throughout.
        using var consistent = reader.InTransaction ? null : reader.Snapshot();
        // By its key: the session table as a whole (every session's roots and EXIT event) was read here before, a cost
        // that grew with the store.
        var session = reader.SessionByKey(id) ?? reader.Session(id); // none: Session says so, with the ids there are
        if (session.Capture != SnapshotWriter.Capture)
        {
            throw new DiffKeeperException(ExitCode.NotFound, $"session {id} is a recording, not a snapshot; 'diffkeeper export' rebuilds recordings");
        }

        if (session.State != "finished")
        {
            throw new DiffKeeperException(ExitCode.NotFound, $"snapshot {id} is {session.State}: its writer did not finish it, so it holds no files; take it again");
        }

        var versions = reader.StateAt(session, long.MaxValue).Where(v => v.Kind == EntryKind.File).ToList();
        foreach (var v in versions)
        {
            if (v.Rel.Contains('/', StringComparison.Ordinal) || TracePath.Validate(v.Rel) != v.Rel || v.Rel == MarkerName)
            {
                throw new DiffKeeperException(ExitCode.UnsafePath, $"snapshot {id} names a file '{v.Rel}', which is not a plain file name (the store is damaged or crafted)");
            }
        }

        var parent = Path.GetDirectoryName(outDir)!;
        var name = Path.GetFileName(outDir);
        string temp;
        int stale;
        try
        {
            Directory.CreateDirectory(parent);
            stale = RemoveStale(parent, name);
            CheckOutput(outDir);
            temp = Path.Combine(parent, $".{name}{TempInfix}{Environment.ProcessId}-{Guid.NewGuid():N}"[..^16]);
            Directory.CreateDirectory(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "materialize to", outDir);
        }

        baseDir ??= File.Exists(Path.Combine(outDir, MarkerName)) ? outDir : null;
        if (baseDir is not null)
        {
            baseDir = Path.GetFullPath(baseDir).TrimEnd('/');
            if (Path.GetFileName(baseDir).Contains(TempInfix, StringComparison.Ordinal))
            {
                // A build directory's marker proves nothing: it is fsynced before the files' bytes (materialize's fsync
                // order), so after a power loss it may name files whose data never reached the disk.
                baseDir = null;
            }
        }

        try
        {
            var bases = baseDir is null ? [] : UsableBases(reader, baseDir);
            var files = new List<MaterializedFile>();
            string? copyReason = baseDir is null ? "no earlier materialization to clone" : null;
            using var clones = new PackClones(reader);
            var unsynced = new List<(SafeFileHandle File, string Rel)>();
            try
            {
                using (var tree = SafeTreeWriter.Open(temp))
                {
                    foreach (var v in versions)
                    {
                        var (file, reason) = WriteFile(reader, session, tree, v, bases.GetValueOrDefault(v.Rel), baseDir, clones, unsynced);
                        files.Add(file);
                        copyReason ??= reason;
                    }
                }

                // The marker's fsync first, then the files' (each still fsynced before the rename, as before): on xfs the
                // marker's forces the log past every change made to the files before it (the clones, sizes, modes), so
                // theirs find nothing left to force; the files' first made two log forces of the same changes
                // (docs/benchmarks.md, "mat16").
                // The directory's mode before the marker too: a change of it after the marker's fsync was a third log force
                // for the directory's fsync.
                var umask = Libc.Umask(0);
                Libc.Umask(umask);
                File.SetUnixFileMode(temp, (UnixFileMode)(0x1ED & ~umask));
                WriteMarker(reader, session, temp, versions);
                foreach (var (file, rel) in unsynced)
                {
                    Sync(file, rel);
                }
            }
            finally
            {
                foreach (var (file, _) in unsynced)
                {
                    file.Dispose();
                }
            }

            Libc.FsyncPath(temp, directory: true);
            Publish(temp, outDir);
            Libc.FsyncPath(parent, directory: true);
            return new MaterializeResult(id, outDir, baseDir, files, copyReason, stale, sw.ElapsedMilliseconds, clones.Reason);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            Materializer.TryDelete(temp);
            throw OsError.At(e, "materialize to", outDir);
        }
        catch
        {
            Materializer.TryDelete(temp);
            throw;
        }
    }

    /// <summary>Removes the siblings of <paramref name="name"/> that runs which are no longer alive left behind.</summary>
    public static int RemoveStale(string parent, string name)
    {
        var removed = 0;
        var prefix = $".{name}{TempInfix}";
        foreach (var dir in Directory.EnumerateDirectories(parent, prefix + "*"))
        {
            var rest = Path.GetFileName(dir)[prefix.Length..];
            var dash = rest.IndexOf('-', StringComparison.Ordinal);
            if (dash > 0 && int.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out var pid) &&
                pid != Environment.ProcessId && Libc.Kill(pid, 0) != 0 && Marshal.GetLastPInvokeError() == Libc.ESRCH)
            {
                Materializer.TryDelete(dir);
                removed++;
            }
        }

        return removed;
    }

    private static void CheckOutput(string outDir)
    {
        if (File.Exists(outDir) || (Directory.Exists(outDir) && new FileInfo(outDir).LinkTarget is not null))
        {
            throw new DiffKeeperException(ExitCode.OutputExists, $"{outDir} exists and is not a directory; choose another --out");
        }

        if (Directory.Exists(outDir) && !File.Exists(Path.Combine(outDir, MarkerName)) && Directory.EnumerateFileSystemEntries(outDir).Any())
        {
            throw new DiffKeeperException(ExitCode.OutputExists,
                $"{outDir} is not empty and is not a materialized snapshot (it has no {MarkerName}); choose an empty or new directory");
        }
    }

    /// <summary>A base file: its recorded version, checked unchanged since it was materialized.</summary>
    private sealed record BaseFile(VersionRecord Version, string Path);

    /// <summary>The files of <paramref name="baseDir"/>'s marker that name versions of this store and are unchanged since.</summary>
    private static Dictionary<string, BaseFile> UsableBases(TraceReader reader, string baseDir)
    {
        var result = new Dictionary<string, BaseFile>(StringComparer.Ordinal);
        string[] lines;
        try
        {
            lines = File.ReadAllLines(Path.Combine(baseDir, MarkerName));
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            return result;
        }

        if (lines.Length < 3 || lines[0] != "diffkeeper-snapshot 1" || lines[1] != "store " + reader.TraceDir)
        {
            return result;
        }

        foreach (var line in lines.Skip(3))
        {
            var f = line.Split(' ', 7);
            if (f.Length != 7 || f[0] != "file" || !long.TryParse(f[1], CultureInfo.InvariantCulture, out var versionId) ||
                !ulong.TryParse(f[3], CultureInfo.InvariantCulture, out var ino) || !ulong.TryParse(f[4], CultureInfo.InvariantCulture, out var size) ||
                !long.TryParse(f[5], CultureInfo.InvariantCulture, out var ctime) || f[6].Contains('/', StringComparison.Ordinal))
            {
                continue;
            }

            var path = Path.Combine(baseDir, f[6]);
            if (Libc.StatxCall(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0 ||
                st.Ino != ino || st.Size != size || st.CtimeNs != ctime)
            {
                continue; // gone, replaced or written since: not a copy of the version the marker names
            }

            // The one row the marker names, by its key: the store's whole version table was read here before.
            if (reader.Version(versionId) is { } v && v.Kind == EntryKind.File && v.ContentId is not null && !v.Pruned &&
                Convert.ToHexStringLower(v.ContentId) == f[2])
            {
                result[f[6]] = new BaseFile(v, path);
            }
        }

        return result;
    }

    /// <summary>Most files whose fsync waits for the marker's (each keeps its descriptor open until then); later ones are fsynced at once.</summary>
    private const int MaxUnsynced = 64;

    /// <summary>
    /// Writes version <paramref name="v"/> as a new file of <paramref name="tree"/>, and fsyncs it, or (while
    /// <paramref name="unsynced"/> holds fewer than <see cref="MaxUnsynced"/>) adds it there for the caller to fsync,
    /// which then owns its handle.
    /// </summary>
    private static (MaterializedFile File, string? CopyReason) WriteFile(TraceReader reader, SessionInfo session, SafeTreeWriter tree,
        VersionRecord v, BaseFile? baseFile, string? baseDir, PackClones clones, List<(SafeFileHandle File, string Rel)> unsynced)
    {
        SafeFileHandle? file = tree.CreateFile(v.Rel);
        try
        {
            var result = WriteFile(reader, session, file, v, baseFile, baseDir, clones);
            if (unsynced.Count < MaxUnsynced)
            {
                unsynced.Add((file, v.Rel));
                file = null;
            }
            else
            {
                Sync(file, v.Rel);
            }

            return result;
        }
        finally
        {
            file?.Dispose();
        }
    }

    private static (MaterializedFile File, string? CopyReason) WriteFile(TraceReader reader, SessionInfo session, SafeFileHandle file,
        VersionRecord v, BaseFile? baseFile, string? baseDir, PackClones clones)
    {
        string? reason = null;
        if (baseFile is not null)
        {
            var errno = Clone(file, baseFile.Path);
            if (errno == 0)
            {
                var (written, punched, sharedBytes) = WriteDifference(reader, session, file, v, baseFile.Version, clones);
                SafeTreeWriter.SetFileMetadata(file, v.Mode, v.MtimeNs, v.Rel);
                return (new MaterializedFile(v.Rel, v.Size, true, written, punched, sharedBytes), null);
            }

            reason = $"reflink of {baseFile.Path} failed: {Libc.StrError(errno).ToLowerInvariant()}";
        }
        else if (baseDir is not null)
        {
            reason = $"{baseDir} holds no unchanged copy of an earlier version of {v.Rel}";
        }

        // The size first: writes inside the size are never extending writes, so xfs makes no speculative
        // preallocation past them (which would outlive the writes as allocated ranges where the version has holes).
        RandomAccess.SetLength(file, v.Size);
        long bytes = 0;
        VersionContent.Read(reader, session, v, (data, offset) =>
        {
            SafeTreeWriter.Write(file, data.Span, offset, v.Rel);
            Interlocked.Add(ref bytes, data.Length);
        }, parallel: true);
        SafeTreeWriter.SetFileMetadata(file, v.Mode, v.MtimeNs, v.Rel);
        return (new MaterializedFile(v.Rel, v.Size, false, bytes, 0), reason);
    }

    /// <summary>FICLONE of the whole base into the new, empty file; 0 or the errno.</summary>
    private static int Clone(SafeFileHandle file, string basePath)
    {
        var source = Libc.Open(basePath, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (source < 0)
        {
            return Marshal.GetLastPInvokeError();
        }

        try
        {
            return Libc.IoctlInt((int)file.DangerousGetHandle(), Libc.FICLONE, source) == 0 ? 0 : Marshal.GetLastPInvokeError();
        }
        finally
        {
            Libc.Close(source);
        }
    }

    /// <summary>
    /// Turns a clone of <paramref name="baseVersion"/> into <paramref name="target"/>: sets the size, punches the
    /// base's data where the target has holes, and writes each target extent the base does not hold at the same
    /// place (same offset, length and blob): cloned from the pack where it lies there raw and aligned
    /// (<see cref="PackClones"/>), else decoded and written. Checks the target's content id first, and every blob it reads.
    /// </summary>
    private static unsafe (long Written, long Punched, long Cloned) WriteDifference(TraceReader reader, SessionInfo session, SafeFileHandle file,
        VersionRecord target, VersionRecord baseVersion, PackClones clones)
    {
        var display = TraceReader.DisplayPath(session, target.RootId, target.Rel);
        DiffKeeperException Malformed() =>
            new(ExitCode.Corrupt, $"{display}: its extent map is malformed; 'diffkeeper verify' tells more") { Path = display };

        if (target.Extents is null || target.ContentId is null || baseVersion.Extents is null ||
            !ExtentMap.Decoder.TryCreate(target.Extents, target.Size, out var decoder))
        {
            throw Malformed();
        }

        // The target's extents, their row ids (sorted in place by BlobHashes, so a copy), the sort's slots and the blob
        // ids in one block of memory populated at once: the managed arrays and lists of two decoded maps were a fifth of
        // the fixed path's page faults (docs/benchmarks.md, "mat16"). The base's map is only walked.
        var n = decoder.Count;
        var block = (byte*)PopulatedMemory.Alloc((nuint)n * (nuint)(sizeof(Extent) + sizeof(long) + sizeof(int) + BlobId.Size));
        try
        {
            var wanted = new Span<Extent>(block, n);
            var rowIds = new Span<long>(block + ((long)n * sizeof(Extent)), n);
            var slots = new Span<int>(block + ((long)n * (sizeof(Extent) + sizeof(long))), n);
            var ids = new Span<byte>(block + ((long)n * (sizeof(Extent) + sizeof(long) + sizeof(int))), n * BlobId.Size);
            var count = 0;
            while (decoder.MoveNext(out var extent))
            {
                rowIds[count] = extent.BlobRowId;
                wanted[count++] = extent;
            }

            // Both maps are in offset order (the decoder admits no other): one walk of the base's finds the extents the
            // base lacks, and checks the base's map to its end.
            var changed = new List<int>();
            if (!decoder.Valid || count != n || !ExtentMap.Decoder.TryCreate(baseVersion.Extents, baseVersion.Size, out var have))
            {
                throw Malformed();
            }

            var haveOne = have.MoveNext(out var had);
            for (var i = 0; i < n; i++)
            {
                while (haveOne && had.Offset < wanted[i].Offset)
                {
                    haveOne = have.MoveNext(out had);
                }

                if (!haveOne || had != wanted[i])
                {
                    changed.Add(i);
                }
            }

            while (haveOne)
            {
                haveOne = have.MoveNext(out had);
            }

            if (!have.Valid)
            {
                throw Malformed();
            }

            // The content id needs every extent's blob id, and nothing else of the rows: only the hash column of the rows
            // the map names, by ranges of row ids (the store's whole blob table, every column of each row checked, was
            // read here before: a tenth of a W4 materialization, and growing with the store).
            DiffKeeperException Missing(BlobMissingException e) =>
                new(ExitCode.Corrupt, $"{display} in snapshot {session.Id} references blob row {e.RowId}, which the catalog lacks") { Path = display };

            try
            {
                reader.BlobHashes(rowIds, slots, ids);
            }
            catch (BlobMissingException e)
            {
                throw Missing(e);
            }

            var hasher = new ExtentMap.ContentHasher();
            for (var i = 0; i < n; i++)
            {
                hasher.Add(wanted[i].Offset, wanted[i].Length, ids.Slice(i * BlobId.Size, BlobId.Size));
            }

            if (!hasher.Finish(target.Size).AsSpan().SequenceEqual(target.ContentId))
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"{display} in snapshot {session.Id}: its extents do not hash to its content id; 'diffkeeper verify' tells more") { Path = display };
            }

            var fd = (int)file.DangerousGetHandle();
            if (Libc.Ftruncate(fd, target.Size) != 0)
            {
                throw OsError.At(Marshal.GetLastPInvokeError(), "resize", target.Rel);
            }

            long punched = 0;
            var gone = Uncovered(baseVersion.Extents, baseVersion.Size, wanted, target.Size);
            foreach (var (s, e) in gone)
            {
                if (Libc.Fallocate(fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, s, e - s) != 0)
                {
                    // Without hole punching the bytes must still read as zeros.
                    SafeTreeWriter.Write(file, new byte[e - s], s, target.Rel);
                }

                punched += e - s;
            }

            var put = new Extent[changed.Count];
            for (var k = 0; k < put.Length; k++)
            {
                put[k] = wanted[changed[k]];
            }

            var (written, cloned) = PutChanged(reader, session, file, target, put, clones, display, Missing);
            // Both in offset order (put follows the map, gone is walked along it): merged, so Retrim needs no sort.
            var touched = new List<(long Start, long End)>(put.Length + gone.Count);
            var g = 0;
            foreach (var e in put)
            {
                while (g < gone.Count && gone[g].Start < e.Offset)
                {
                    touched.Add(gone[g++]);
                }

                touched.Add((e.Offset, e.Offset + e.Length));
            }

            while (g < gone.Count)
            {
                touched.Add(gone[g++]);
            }
            punched += Retrim(file, target.Rel, wanted, touched, target.Size);
            return (written, punched, cloned);
        }
        finally
        {
            PopulatedMemory.Free(block);
        }
    }

    /// <summary>
    /// Writes <paramref name="put"/> (extents of <paramref name="target"/> the base does not hold, in offset order) into
    /// <paramref name="file"/>: cloned from the pack where they lie there raw and aligned, else decoded and written.
    /// Returns the bytes written and the bytes cloned.
    /// </summary>
    private static unsafe (long Written, long Cloned) PutChanged(TraceReader reader, SessionInfo session, SafeFileHandle file, VersionRecord target,
        Extent[] put, PackClones clones, string display, Func<BlobMissingException, DiffKeeperException> missing)
    {
        // Full rows (codec, pack, bases: each checked against its column's domain) only for the extents to put, by ranges
        // of row ids (W4: its 208 changed blocks' rows are one range; a look-up each cost ~5 µs and a statement step).
        var changedRows = new long[put.Length];
        for (var k = 0; k < put.Length; k++)
        {
            changedRows[k] = put[k].BlobRowId;
        }

        Storage.Packs.BlobLocation[] rows;
        try
        {
            rows = reader.BlobRows(changedRows);
        }
        catch (BlobMissingException e)
        {
            throw missing(e);
        }

        // Changed extents that lie raw and aligned in a pack, in runs adjacent both in the file and in one pack (an
        // aligned group's pairs of members: W4's changed megabytes are 16 adjacent blocks), each run cloned at once.
        var where = new (long PackId, long Offset)?[put.Length];
        for (var k = 0; k < put.Length; k++)
        {
            where[k] = clones.Locate(rows[k], put[k].Offset);
        }

        var runs = new List<(int First, int Count, long Bytes)>();
        for (var k = 0; k < put.Length; k++)
        {
            if (runs.Count > 0 && where[k] is { } w && where[k - 1] is { } p && runs[^1].First + runs[^1].Count == k && w.PackId == p.PackId &&
                p.Offset + put[k - 1].Length == w.Offset && put[k - 1].Offset + put[k - 1].Length == put[k].Offset &&
                runs[^1].Bytes + put[k].Length <= PackClones.MaxRun)
            {
                runs[^1] = (runs[^1].First, runs[^1].Count + 1, runs[^1].Bytes + put[k].Length);
            }
            else
            {
                runs.Add((k, 1, put[k].Length));
            }
        }

        long written = 0, cloned = 0;
        var longest = 1;
        foreach (var e in put)
        {
            longest = Math.Max(longest, e.Length);
        }

        PackClones.Run AsRun(int r)
        {
            var (first, count, _) = runs[r];
            return new PackClones.Run(new ArraySegment<Storage.Packs.BlobLocation>(rows, first, count), where[first]!.Value.PackId, where[first]!.Value.Offset, put[first].Offset);
        }

        // Runs [from, to) but skip: those that lie aligned in a pack through PutRuns, the others (and any PutRuns found
        // damaged) read the ordinary way, which decodes, checks and names the damage.
        void Put(int from, int to, int skip, Span<byte> lanes)
        {
            byte[]? scratch = null;
            byte[] Scratch() => scratch ??= System.Buffers.ArrayPool<byte>.Shared.Rent(longest);
            try
            {
                var inPack = new List<int>();
                for (var r = from; r < to; r++)
                {
                    if (where[runs[r].First] is not null && r != skip)
                    {
                        inPack.Add(r);
                    }
                }

                var asRuns = new PackClones.Run[inPack.Count];
                for (var k = 0; k < inPack.Count; k++)
                {
                    asRuns[k] = AsRun(inPack[k]);
                }

                var results = new long[inPack.Count];
                clones.PutRuns(asRuns, results, file, lanes, Scratch, target.Rel);
                var ordinary = new bool[to - from];
                for (var r = from; r < to; r++)
                {
                    ordinary[r - from] = where[runs[r].First] is null && r != skip;
                }

                for (var k = 0; k < inPack.Count; k++)
                {
                    if (results[k] < 0)
                    {
                        ordinary[inPack[k] - from] = true;
                    }
                    else
                    {
                        Interlocked.Add(ref results[k] > 0 ? ref cloned : ref written, runs[inPack[k]].Bytes);
                    }
                }

                for (var r = from; r < to; r++)
                {
                    if (!ordinary[r - from])
                    {
                        continue;
                    }

                    for (var k = runs[r].First; k < runs[r].First + runs[r].Count; k++)
                    {
                        var span = Scratch().AsSpan(0, put[k].Length);
                        reader.Blobs.Read(rows[k], span);
                        SafeTreeWriter.Write(file, span, put[k].Offset, target.Rel);
                        Interlocked.Add(ref written, span.Length);
                    }
                }
            }
            finally
            {
                if (scratch is not null)
                {
                    System.Buffers.ArrayPool<byte>.Shared.Return(scratch);
                }
            }
        }

        // The first run that lies in a pack alone, so that a clone that fails (EXDEV: the store on another file system)
        // is known before any other block is checked: the rest are then checked once, as they are copied. Then the
        // runs in slices of about equal bytes, one per core (a thread each, the first on this one): a W4 version's
        // 13 MiB are two slices of ~104 blocks, hashed sixteen at a time.
        var probe = 0;
        while (probe < runs.Count && where[runs[probe].First] is null)
        {
            probe++;
        }

        var restBytes = 0L;
        for (var r = 0; r < runs.Count; r++)
        {
            restBytes += r == probe ? 0 : runs[r].Bytes;
        }

        var slices = (int)Math.Clamp(restBytes / MinSliceBytes, 1, Environment.ProcessorCount);
        var bounds = new int[slices + 1];
        Array.Fill(bounds, runs.Count);
        bounds[0] = 0;
        var sum = 0L;
        for (int r = 0, k = 1; r < runs.Count && k < slices; r++)
        {
            sum += r == probe ? 0 : runs[r].Bytes;
            while (k < slices && sum * slices >= k * restBytes)
            {
                bounds[k++] = r + 1;
            }
        }

        var lanes = (byte*)NativeMemory.AlignedAlloc((nuint)(slices * PackClones.LaneBytes), 64);
        try
        {
            if (probe < runs.Count)
            {
                Put(probe, probe + 1, -1, new Span<byte>(lanes, PackClones.LaneBytes));
            }

            OnThreads(slices, k => Put(bounds[k], bounds[k + 1], probe, new Span<byte>(lanes + (k * PackClones.LaneBytes), PackClones.LaneBytes)));
        }
        catch (Storage.Packs.BlobDamagedException d)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{display} in snapshot {session.Id}: {d.Message}") { Path = display };
        }
        finally
        {
            NativeMemory.AlignedFree(lanes);
        }

        return (written, cloned);
    }

    /// <summary>Bytes of runs below which a slice of its own (a thread) costs more than it saves.</summary>
    private const long MinSliceBytes = 4 << 20;

    /// <summary>
    /// Runs <paramref name="body"/>(k) for k below <paramref name="count"/>, k = 0 on this thread and each other on a
    /// thread of its own, and waits for all; rethrows the first failure (by k). Threads of its own rather than the
    /// pool's: a materialization starts no pool (its worker threads and the gate thread, and their spinning while they
    /// wait, cost more than the one or two threads a file's changed blocks need).
    /// </summary>
    private static void OnThreads(int count, Action<int> body)
    {
        var failed = new System.Runtime.ExceptionServices.ExceptionDispatchInfo?[count];
        var threads = new List<Thread>(count - 1);
        try
        {
            for (var k = 1; k < count; k++)
            {
                var slice = k;
                var thread = new Thread(() =>
                {
                    try
                    {
                        body(slice);
                    }
                    catch (Exception e)
                    {
                        failed[slice] = System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
                    }
                }) { IsBackground = true, Name = "materialize" };
                thread.UnsafeStart();
                threads.Add(thread);
            }

            body(0);
        }
        catch (Exception e)
        {
            // body(0)'s failure, or a thread that could not start: either way the started ones are joined below
            // before the caller frees the buffers and closes the file they use.
            failed[0] ??= System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e);
        }
        finally
        {
            foreach (var t in threads)
            {
                t.Join();
            }
        }

        foreach (var f in failed)
        {
            f?.Throw();
        }
    }

    private const long TrimWindow = 1 << 20;

    /// <summary>
    /// Punches what a file system allocated around the written and punched ranges beyond what they wrote: xfs
    /// writes into a reflinked file through its copy-on-write fork, in units of the cow extent size hint, and may
    /// leave the rest of such a unit allocated where the version has a hole. Looks (SEEK_DATA) only within the
    /// 1 MiB windows around the ranges touched, after an fsync (allocation is decided at writeback).
    /// </summary>
    private static long Retrim(SafeFileHandle file, string rel, ReadOnlySpan<Extent> wanted, List<(long Start, long End)> touched, long size)
    {
        // In order of start (the caller merges them so; sorted here only if not): LINQ's Select and OrderBy here were a
        // class constructor, interface dispatch cells written (copy-on-write faults) and pooled arrays on every
        // materialization beside a base (docs/benchmarks.md, "mat17").
        for (var i = 1; i < touched.Count; i++)
        {
            if (touched[i].Start < touched[i - 1].Start)
            {
                touched.Sort();
                break;
            }
        }

        var windows = new List<(long Start, long End)>();
        foreach (var r in touched)
        {
            var (s, e) = (r.Start / TrimWindow * TrimWindow, Math.Min((r.End + TrimWindow - 1) / TrimWindow * TrimWindow, size));
            if (windows.Count > 0 && s <= windows[^1].End)
            {
                windows[^1] = (windows[^1].Start, Math.Max(windows[^1].End, e));
            }
            else
            {
                windows.Add((s, e));
            }
        }

        // A window the version's extents cover end to end has nothing to punch: no fsync and no look for it (a W4
        // checkpoint has no hole at all, and its fsync here was a writeback of every changed range before the last one).
        var open = 0;
        for (var i = 0; i < windows.Count; i++)
        {
            if (!Covered(wanted, windows[i].Start, windows[i].End))
            {
                windows[open++] = windows[i];
            }
        }

        windows.RemoveRange(open, windows.Count - open);
        if (windows.Count == 0)
        {
            return 0;
        }

        Sync(file, rel);
        var fd = (int)file.DangerousGetHandle();
        long punched = 0;
        foreach (var (ws, we) in windows)
        {
            // Only the version's extents inside the window: sorting all of a 16,000-extent map per window would
            // cost more than the window's look-up.
            var inside = new List<(long, long)>();
            for (var i = FirstEndingAfter(wanted, ws); i < wanted.Length && wanted[i].Offset < we; i++)
            {
                inside.Add((wanted[i].Offset, wanted[i].Offset + (long)wanted[i].Length));
            }

            foreach (var (s, e) in Subtract(BlockIngest.DataRanges(file, ws, we), inside, we))
            {
                if (Libc.Fallocate(fd, Libc.FALLOC_FL_PUNCH_HOLE | Libc.FALLOC_FL_KEEP_SIZE, s, e - s) == 0)
                {
                    punched += e - s;
                }
            }
        }

        return punched;
    }

    /// <summary>The index of the first extent of the map <paramref name="map"/> (sorted, disjoint) that ends after <paramref name="at"/>.</summary>
    private static int FirstEndingAfter(ReadOnlySpan<Extent> map, long at)
    {
        int lo = 0, hi = map.Length;
        while (lo < hi)
        {
            var mid = (lo + hi) >>> 1;
            if (map[mid].Offset + map[mid].Length <= at)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        return lo;
    }

    /// <summary>Whether the extents of <paramref name="map"/> cover [<paramref name="start"/>, <paramref name="end"/>) with no gap.</summary>
    private static bool Covered(ReadOnlySpan<Extent> map, long start, long end)
    {
        for (var i = FirstEndingAfter(map, start); i < map.Length && start < end; i++)
        {
            if (map[i].Offset > start)
            {
                return false;
            }

            start = map[i].Offset + map[i].Length;
        }

        return start >= end;
    }

    /// <summary>
    /// The parts of the extents of <paramref name="encoded"/> (an extent map of a file of <paramref name="encodedSize"/>
    /// bytes, already checked well formed) that none of <paramref name="cover"/>'s extents covers, below
    /// <paramref name="limit"/>: what a clone of the base holds where the target has holes. Walks the encoded map and
    /// the decoded one side by side (both in offset order, disjoint) without decoding the first into a list.
    /// </summary>
    private static List<(long Start, long End)> Uncovered(byte[] encoded, long encodedSize, ReadOnlySpan<Extent> cover, long limit)
    {
        var result = new List<(long, long)>();
        if (!ExtentMap.Decoder.TryCreate(encoded, encodedSize, out var map))
        {
            return result;
        }

        var j = 0; // extents of cover are sorted and disjoint: one that ends before an extent of the map ends before every later one
        while (map.MoveNext(out var extent))
        {
            var s = extent.Offset;
            var end = Math.Min(extent.Offset + extent.Length, limit);
            while (j < cover.Length && cover[j].Offset + cover[j].Length <= s)
            {
                j++;
            }

            for (var k = j; k < cover.Length && s < end && cover[k].Offset < end; k++)
            {
                var (cs, ce) = (cover[k].Offset, cover[k].Offset + cover[k].Length);
                if (cs > s)
                {
                    result.Add((s, cs));
                }

                s = Math.Max(s, ce);
            }

            if (s < end)
            {
                result.Add((s, end));
            }
        }

        return result;
    }

    /// <summary>The parts of ranges <paramref name="a"/> that no range of <paramref name="b"/> covers, below <paramref name="limit"/>.</summary>
    public static List<(long Start, long End)> Subtract(IEnumerable<(long Start, long End)> a, IEnumerable<(long Start, long End)> b, long limit)
    {
        var (ranges, cover) = (Sorted(a), Sorted(b));
        return Subtract(ranges.Count, i => ranges[i], cover.Count, i => cover[i], limit);
    }

    /// <summary><see cref="Subtract"/> of ranges given by index, each list sorted by start.</summary>
    private static List<(long Start, long End)> Subtract(int aCount, Func<int, (long Start, long End)> aAt, int bCount,
        Func<int, (long Start, long End)> bAt, long limit)
    {
        var result = new List<(long, long)>();
        var first = 0; // ranges of a are sorted and disjoint: covers ending before one end before every later one
        for (var i = 0; i < aCount; i++)
        {
            var (s, end) = aAt(i);
            end = Math.Min(end, limit);
            while (first < bCount && bAt(first).End <= s)
            {
                first++;
            }

            for (var j = first; j < bCount && s < end && bAt(j).Start < end; j++)
            {
                var (cs, ce) = bAt(j);
                if (ce <= s)
                {
                    continue;
                }

                if (cs > s)
                {
                    result.Add((s, cs));
                }

                s = Math.Max(s, ce);
            }

            if (s < end)
            {
                result.Add((s, end));
            }
        }

        return result;
    }

    /// <summary>
    /// The ranges by start, sorted only when they are not already (extent maps are in offset order): LINQ's OrderBy of a
    /// 4,096-extent map's ranges, twice per file, was a sixth of a W4 materialization's CPU with the gen0 GC it caused.
    /// </summary>
    private static List<(long Start, long End)> Sorted(IEnumerable<(long Start, long End)> ranges)
    {
        var list = ranges.ToList();
        for (var i = 1; i < list.Count; i++)
        {
            if (list[i].Start < list[i - 1].Start)
            {
                list.Sort();
                break;
            }
        }

        return list;
    }

    private static void Sync(SafeFileHandle file, string rel)
    {
        if (Libc.Fsync((int)file.DangerousGetHandle()) != 0)
        {
            throw OsError.At(Marshal.GetLastPInvokeError(), "sync", rel);
        }
    }

    private static void WriteMarker(TraceReader reader, SessionInfo session, string temp, List<VersionRecord> versions)
    {
        var text = new StringBuilder();
        text.Append("diffkeeper-snapshot 1\n").Append("store ").Append(reader.TraceDir).Append('\n')
            .Append(CultureInfo.InvariantCulture, $"snapshot {session.Id}\n");
        foreach (var v in versions)
        {
            var path = Path.Combine(temp, v.Rel);
            if (Libc.StatxCall(Libc.AT_FDCWD, path, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_BASIC_STATS, out var st) != 0)
            {
                throw OsError.At(Marshal.GetLastPInvokeError(), "read", path);
            }

            text.Append(CultureInfo.InvariantCulture, $"file {v.Id} {Convert.ToHexStringLower(v.ContentId!)} {st.Ino} {st.Size} {st.CtimeNs} {v.Rel}\n");
        }

        var marker = Path.Combine(temp, MarkerName);
        using var handle = File.OpenHandle(marker, FileMode.CreateNew, FileAccess.Write);
        RandomAccess.Write(handle, Encoding.UTF8.GetBytes(text.ToString()), 0);
        RandomAccess.FlushToDisk(handle);
    }

    private static void Publish(string temp, string outDir)
    {
        if (Libc.RenameAt(Libc.AT_FDCWD, temp, Libc.AT_FDCWD, outDir) == 0)
        {
            return; // there was no DIR, or an empty one
        }

        if (Libc.RenameAt2(Libc.AT_FDCWD, temp, Libc.AT_FDCWD, outDir, Libc.RENAME_EXCHANGE) != 0)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot move {temp} to {outDir}: {Libc.StrError(Marshal.GetLastPInvokeError())}");
        }

        // The old output now has the temporary name: removed here, or by the next run if this one dies first.
        Materializer.TryDelete(temp);
    }
}
