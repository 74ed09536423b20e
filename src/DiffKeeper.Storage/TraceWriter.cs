using System.Buffers;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>
/// The one writer of a trace. Contract: everything added since the last <see cref="Commit"/> becomes visible to
/// readers, and durable against a crash of this process, atomically when <see cref="Commit"/> returns; before
/// that, nothing of it is visible. Blob bytes are fsynced before the commit that references them (crash
/// protocol, docs/store-format.md). Not thread-safe: one thread writes; the members that say so
/// (<see cref="SyncToDisk"/>, <see cref="CreatePack"/>, <see cref="DeletePackFiles"/>) may be called from others.
/// </summary>
public sealed class TraceWriter : IDisposable
{
    private readonly TraceLock _lock;
    private readonly SqliteDatabase _db;
    private readonly Dictionary<BlobId, long> _newBlobs = [];

    // Rows of blobs that exist only as deltas: a version that references one again gets it whole (the newest
    // version of a path never needs a delta chain; docs/store-format.md, "Compaction").
    private readonly Dictionary<BlobId, long> _deltaRows = [];

    // Blob rows the open transaction inserted or moved: their records may still be in the pack's buffer, so they are
    // never a delta base (docs/store-format.md, "Deltas written while recording").
    private readonly HashSet<long> _uncommittedRows = [];
    private readonly BaseChains _bases;
    private readonly SqliteStatement _insertDelta;
    private readonly SqliteStatement _promoteBlob;
    private readonly Dictionary<(long Root, string Rel), long> _pathIds = new(PathKeyComparer.Instance);

    // A root of a session this writer began → the root whose path rows it names its paths with (its path owner:
    // an earlier root of the same directory, or itself); docs/store-format.md, "Catalog", roots.paths_root.
    private readonly Dictionary<long, long> _pathOwners = [];
    private SqliteStatement? _findPath;

    // Baseline inheritance (format 5, docs/store-format.md, sessions.baseline_from): while the session
    // _inheritingSession records its baseline, a baseline version equal to the path's version in the state the
    // session inherits (the end of the sessions in _baselineChain) is not stored again.
    private long _inheritingSession;
    private long[] _baselineChain = [];
    private readonly HashSet<long> _baselineSeen = [];
    private SqliteStatement? _inheritedVersion;

    /// <summary>
    /// Longest chain of sessions a baseline may inherit through; the session after it stores its whole baseline again,
    /// so reading any state joins at most this many sessions' rows.
    /// </summary>
    public const int MaxBaselineChain = 32;
    private readonly SqliteStatement _insertEvent;
    private readonly SqliteStatement _insertVersion;
    private readonly SqliteStatement _insertPath;
    private readonly SqliteStatement _findBlob;
    private readonly SqliteStatement _insertBlob;
    private readonly SqliteStatement _commitPack;
    private readonly SqliteStatement _insertMember;
    private readonly SqliteStatement _fillGroup;
    private readonly SqliteStatement _dropBlob;
    private readonly SqliteStatement _shiftMember;
    // NoteFound's two statements, prepared once: an untar finds ~1,300 states stored already, and preparing them at
    // each was most of the ~1,400 statements compiled per recording.
    private readonly SqliteStatement _blobPlace;
    private readonly SqliteStatement _moveSlice;
    private bool _inTransaction;

    // The write run being built (format 7, docs/store-format.md, "Write runs"): its row is inserted when an event
    // does not extend it and before every commit, so a run never spans a commit.
    private readonly EventRun.Builder _run = new();
    private bool _runOpen;

    // The group the small blobs stored since the last commit go to (docs/store-format.md, "Groups written while
    // recording"); null when none was stored yet. Its row and its members' rows are in the open transaction; the
    // commit writes its record first.
    private IngestGroup? _group;
    // The buffers of the groups written, for the next ones: a new 1 MiB array per commit is 256 fresh pages, a page
    // fault each as the group fills (an untar of 130 MB: ~11,000 of the recorder's faults, 12-35 us each on this VM).
    // As many as the groups in flight at once (the open one and those the encoder holds), so a few.
    private readonly Stack<byte[]> _spareGroupBuffers = new();

    // Full groups closed while recording, hashed and compressed beside the writer's thread (created with the first);
    // their records and rows are written in the order closed, when done and at the latest by the commit.
    private GroupEncoder? _encoder;

    /// <summary>Full groups the encoder may hold at once: past them the writer's thread encodes the next itself.</summary>
    private const int GroupsInFlight = 2;

    // The aligned group (docs/store-format.md, "Aligned groups") a block ingest's changed blocks that compress badly go
    // to; written when full and at the commit, like _group, with its buffer kept for the next one.
    private AlignedGroup? _aligned;
    private byte[]? _spareAlignedBuffer;

    // True while every blob row in the catalog was inserted by this writer (a new trace, and no maintenance pass
    // since): then _newBlobs knows every hash, and a miss needs no catalog lookup. That lookup (an index search
    // per new chunk) was one of the five catalog statements a new small file cost.
    private bool _ownsAllBlobs;
    private bool _deferSync;
    private readonly HashSet<string> _unsynced = [];
    private PackWriter? _pack;
    private long _nextPackId;

    // Blob rows named by versions added since TrackReferences: a maintenance pass planned on an older snapshot of
    // the catalog must not sweep them or re-encode them (they may be a path's newest content).
    private HashSet<long>? _referenced;

    private TraceWriter(string traceDir, TraceLock traceLock, SqliteDatabase db)
    {
        TraceDir = traceDir;
        _lock = traceLock;
        _db = db;
        lock (OpenHere)
        {
            OpenHere.Add(traceDir);
        }

        _insertEvent = db.Prepare("INSERT INTO events(session_id, seq, time_ns, op, path_id, path2_id, size, pid, comm, detail, offset, length, run) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
        _insertVersion = db.Prepare("INSERT INTO versions(session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents, link) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
        _insertPath = db.Prepare("INSERT INTO paths(root_id, rel) VALUES (?1, ?2)");
        _findBlob = db.Prepare("SELECT id, codec FROM blobs WHERE hash = ?1");
        _promoteBlob = db.Prepare("UPDATE blobs SET pack_id = ?2, offset = ?3, stored_len = ?4, codec = ?5, bases = NULL WHERE id = ?1");
        _insertBlob = db.Prepare("INSERT INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        _commitPack = db.Prepare("INSERT INTO packs(id, committed_size) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET committed_size = excluded.committed_size");
        _insertMember = db.Prepare("INSERT INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec, bases) VALUES (?1, -1, ?2, ?3, 0, ?4, ?5)");
        _fillGroup = db.Prepare("UPDATE blobs SET hash = ?2, pack_id = ?3, offset = ?4, raw_len = ?5, stored_len = ?6 WHERE id = ?1");
        _dropBlob = db.Prepare("DELETE FROM blobs WHERE id = ?1");
        _shiftMember = db.Prepare("UPDATE blobs SET offset = offset + ?2 WHERE id = ?1");
        _blobPlace = db.Prepare("SELECT codec, offset, bases FROM blobs WHERE id = ?1");
        _moveSlice = db.Prepare("UPDATE blobs SET offset = ?2, bases = ?3 WHERE id = ?1");
        _insertDelta = db.Prepare("INSERT INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec, bases) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        _bases = new BaseChains(db, traceDir);
    }

    /// <summary>
    /// Whether the last chunk of each file's data (and a chunk that extends the one stored just before it) is stored
    /// as a member of a group written at the next commit, instead of one record each (docs/store-format.md, "Groups written while recording"). On by default; off while a size limit
    /// is set, whose ring refuses a record when it is written (a group is written at the commit).
    /// </summary>
    public bool GroupsSmallBlobs { get; set; } = true;

    /// <summary>Whether <see cref="TryGroup"/> groups anything now: <see cref="GroupsSmallBlobs"/> and no size limit.</summary>
    public bool GroupsNow => GroupsSmallBlobs && _sizeLimit is null;

    /// <summary>
    /// Whether a block ingest stores the changed 64 KiB blocks that zstd shrinks by less than an eighth uncompressed, in
    /// aligned groups (<see cref="TryAlignedGroup"/>), so that a materialization beside the parent can clone them from
    /// the pack. On by default; only while <see cref="GroupsNow"/> (the record is written at the commit, as a group's).
    /// </summary>
    public bool AlignsChangedBlocks { get; set; } = true;

    /// <summary>Whether <see cref="TryAlignedGroup"/> takes anything now.</summary>
    public bool AlignsNow => AlignsChangedBlocks && GroupsNow;

    public string TraceDir { get; }

    /// <summary>
    /// When set, an event or pack record that would take the trace past the limit is refused once with an exit-10
    /// <see cref="DiffKeeperException"/> (<see cref="TraceSizeLimit"/>); nothing already added is changed. Setting it
    /// also keeps the catalog's write-ahead log to about a sixteenth of the limit (checkpoints every so many pages,
    /// and the log file cut back to that after each), since the log's bytes count.
    /// </summary>
    public TraceSizeLimit? SizeLimit
    {
        get => _sizeLimit;
        set
        {
            _sizeLimit = value;
            if (value is not null)
            {
                var pages = Math.Clamp(value.Bytes / 16 / 4096, 16, 1000);
                _db.Execute(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"PRAGMA wal_autocheckpoint={pages}; PRAGMA journal_size_limit={pages * 4096};"));
            }
        }
    }

    private TraceSizeLimit? _sizeLimit;

    /// <summary>
    /// Whether the packs this writer creates write large records straight from the caller's payload
    /// (<see cref="PackWriter.WritesLargeRecordsDirect"/>); set before the first blob. `snapshot` sets it.
    /// </summary>
    public bool WritesLargeRecordsDirect { get; set; }

    /// <summary>Bytes appended to packs by this writer.</summary>
    public long StoredBytesWritten { get; private set; }

    /// <summary>
    /// Opens (creating if needed, 0700) the trace for writing: takes the lock, checks the format, cuts torn pack
    /// tails back to their committed size, and marks sessions a crashed writer left open as interrupted.
    /// </summary>
    // Traces a writer of this process has open (full paths): a reader closing beside one leaves the catalog's -wal and
    // -shm alone (TraceReader.RemoveSidecars).
    private static readonly HashSet<string> OpenHere = [];

    internal static bool IsOpenInThisProcess(string traceDir)
    {
        lock (OpenHere)
        {
            return OpenHere.Contains(traceDir);
        }
    }

    public static TraceWriter Open(string traceDir)
    {
        traceDir = Path.GetFullPath(traceDir);
        try
        {
            Directory.CreateDirectory(traceDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "create the trace directory", traceDir);
        }

        TraceFile.CheckSidecars(traceDir);
        var traceLock = TraceLock.Acquire(traceDir);
        try
        {
            var catalogPath = Path.Combine(traceDir, "catalog.db");
            var readersLocked = ReaderLock.Ensure(traceDir); // before a new catalog: every reader of it finds the lock
            if (!File.Exists(catalogPath))
            {
                CreateCatalog(catalogPath);
                readersLocked = true;
            }

            DeleteResizedCatalog(traceDir); // a copy a kill left half made or not yet renamed (CloseCatalog)
            var db = SqliteDatabase.Open(catalogPath, readOnly: false);
            try
            {
                CatalogSchema.CreateOrCheck(db, catalogPath);
                var writer = new TraceWriter(traceDir, traceLock, db) { _mayReplaceCatalog = readersLocked };
                writer.Recover();
                using (var any = db.Prepare("SELECT EXISTS(SELECT 1 FROM blobs)"))
                {
                    writer._ownsAllBlobs = any.ScalarInt64() == 0;
                }

                return writer;
            }
            catch
            {
                db.Dispose();
                throw;
            }
        }
        catch
        {
            traceLock.Dispose();
            throw;
        }
    }

    /// <summary>A catalog at most this big in 4 KiB pages is rewritten in 1 KiB pages when its writer closes.</summary>
    internal const long SmallCatalog = 256 << 10;

    /// <summary>A catalog at least this big in 1 KiB pages is rewritten in 4 KiB pages when its writer closes.</summary>
    internal const long LargeCatalog = 4 << 20;

    /// <summary>The largest catalog in 1 KiB pages a close rewrites in 4 KiB pages.</summary>
    internal const long MaxRewrite = 64 << 20;

    /// <summary>The name of a catalog being rewritten in another page size (<see cref="CloseCatalog"/>).</summary>
    internal const string ResizedCatalog = "catalog.db.resized";

    // Whether every reader of the catalog found LOCK.readers there (ReaderLock.Ensure): false when this writer had to
    // create it under a catalog it did not make, as a reader of another user may then be running without it.
    private bool _mayReplaceCatalog;

    /// <summary>
    /// Closes the catalog; a small one in 4 KiB pages is first rewritten in 1 KiB pages, a large one in 1 KiB pages
    /// in 4 KiB pages (docs/store-format.md, "The catalog's page size"). Every table and index takes at least a page:
    /// W1's catalog (20 sessions of one 1 MiB file) was 22 mostly empty 4 KiB pages, 90 KB, 3 % of the trace. A trace
    /// is created in 4 KiB pages, so a write storm's first session never writes in 1 KiB pages.
    /// The copy (<c>VACUUM INTO</c> a temporary name, put in WAL mode, given the catalog's mode and owner, synced) is
    /// made without holding off readers: nothing else changes the catalog while this writer holds LOCK, so the copy
    /// is as current at the rename as when it was made, whatever its size. Only the rename waits for readers: it is
    /// done once this connection closed as the last one (no <c>-wal</c> or <c>-shm</c> left) and while LOCK.readers
    /// is held exclusively, so no reader has the old file open (every reader takes the lock before it opens the
    /// catalog) and one starting meanwhile waits for a rename, not a copy. Either name is a whole catalog at every
    /// moment; a temporary copy a kill or a failure left is deleted. Best effort: anything in the way (a reader, a
    /// size limit the copy would pass, a full disk) leaves the catalog as it was.
    /// </summary>
    private void CloseCatalog()
    {
        var catalog = Path.Combine(TraceDir, "catalog.db");
        var temp = Path.Combine(TraceDir, ResizedCatalog);
        var copied = false; // temp is a whole catalog in WAL mode, with catalog.db's mode and owner, synced
        try
        {
            copied = CopyInOtherPageSize(catalog, temp);
        }
        catch (Exception e) when (e is CatalogException or DiffKeeperException or IOException or UnauthorizedAccessException)
        {
        }
        finally
        {
            _db.Dispose();
        }

        var renamed = false;
        try
        {
            // The directory synced first: the close's unlink of the old -wal must reach the disk before the rename
            // does, or a power cut could leave the new catalog beside the old catalog's WAL, whose frames are valid.
            if (copied && Native.Interop.Libc.FsyncPath(TraceDir, directory: true))
            {
                using var readers = ReaderLock.TryExclusive(TraceDir);
                renamed = readers is not null && !File.Exists(catalog + "-wal") && !File.Exists(catalog + "-shm") &&
                    Native.Interop.Libc.RenameAt(Native.Interop.Libc.AT_FDCWD, temp, Native.Interop.Libc.AT_FDCWD, catalog) == 0;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
        finally
        {
            if (!renamed)
            {
                DeleteResizedCatalog(TraceDir);
            }
        }

        if (renamed)
        {
            _ = Native.Interop.Libc.FsyncPath(TraceDir, directory: true);
        }
    }

    /// <summary>
    /// Writes the catalog in the other page size to <paramref name="temp"/> when its size calls for it (see
    /// <see cref="CloseCatalog"/>); false when it does not, or when the copy is not whole, in WAL mode, with the
    /// catalog's mode and owner, and synced.
    /// </summary>
    private bool CopyInOtherPageSize(string catalog, string temp)
    {
        long pageSize, bytes;
        using (var pragma = _db.Prepare("SELECT page_size, page_count FROM pragma_page_size(), pragma_page_count()"))
        {
            pragma.Step();
            (pageSize, bytes) = (pragma.Int64(0), pragma.Int64(0) * pragma.Int64(1));
        }

        // Back to 4 KiB only up to MaxRewrite: a catalog that grew far past it in one writer's life (keep mode for
        // days) would make the close copy all of it; it stays in 1 KiB pages.
        var target = pageSize == 4096 && bytes <= SmallCatalog ? 1024 : pageSize == 1024 && bytes >= LargeCatalog && bytes <= MaxRewrite ? 4096 : 0;
        if (target == 0 || !_mayReplaceCatalog || TraceFile.NotRegularKind(catalog) is not null ||
            (_sizeLimit is { } limit && TraceSizeLimit.Measure(TraceDir) + bytes > limit.Bytes))
        {
            return false;
        }

        using (var probe = ReaderLock.TryExclusive(TraceDir))
        {
            if (probe is null)
            {
                return false; // a reader now is likely a reader at the rename: not worth the copy
            }
        }

        if (Native.Interop.Libc.StatxCall(Native.Interop.Libc.AT_FDCWD, catalog, Native.Interop.Libc.AT_SYMLINK_NOFOLLOW,
                Native.Interop.Libc.STATX_BASIC_STATS, out var original) != 0 ||
            Native.Interop.Libc.StatxCall(Native.Interop.Libc.AT_FDCWD, Path.Combine(TraceDir, "LOCK.readers"), Native.Interop.Libc.AT_SYMLINK_NOFOLLOW,
                Native.Interop.Libc.STATX_BASIC_STATS, out var readersLock) != 0 ||
            ((readersLock.Mode & 0x124) != 0x124 && // 0444: anyone opens it
             (readersLock.Uid != original.Uid || readersLock.Gid != original.Gid || (original.Mode & 0x124 & ~readersLock.Mode) != 0)))
        {
            // Whoever may read catalog.db must be able to open LOCK.readers: a reader who cannot runs without the
            // lock, and a rename could be made under it.
            return false;
        }

        DeleteResizedCatalog(TraceDir);
        _db.Execute(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"PRAGMA page_size={target};"));
        using (var copy = _db.Prepare("VACUUM INTO ?1"))
        {
            copy.Bind(1, temp).Run();
        }

        // VACUUM INTO writes a rollback-journal database; in WAL mode, as every catalog, a writer never waits for readers.
        SqliteDatabase.Open(temp, readOnly: false).Dispose();
        if (File.Exists(temp + "-wal") || File.Exists(temp + "-shm") || File.Exists(temp + "-journal"))
        {
            return false; // not all in the one file
        }

        // The copy is this process's new file: it gets the catalog's owner, then its mode (chown clears set-id bits).
        using var h = TraceFile.OpenRegular(temp, write: true);
        var fd = (int)h.DangerousGetHandle();
        return Native.Interop.Libc.StatxCall(fd, "", Native.Interop.Libc.AT_EMPTY_PATH, Native.Interop.Libc.STATX_BASIC_STATS, out var made) == 0 &&
            ((made.Uid == original.Uid && made.Gid == original.Gid) || Native.Interop.Libc.Fchown(fd, (int)original.Uid, (int)original.Gid) == 0) &&
            Native.Interop.Libc.Fchmod(fd, original.Mode & 0xFFF) == 0 &&
            Native.Interop.Libc.Fsync(fd) == 0; // VACUUM INTO does not sync what it writes
    }

    /// <summary>Deletes a <see cref="ResizedCatalog"/> and its journal files; best effort (the next writer tries again).</summary>
    private static void DeleteResizedCatalog(string traceDir)
    {
        foreach (var suffix in (ReadOnlySpan<string>)["", "-journal", "-wal", "-shm"])
        {
            try
            {
                File.Delete(Path.Combine(traceDir, ResizedCatalog + suffix));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }
    }

    /// <summary>
    /// Removes the directories under packs/ that no pack is left in (W1's 20 sessions left 40, 160 KiB in <c>du</c>
    /// for 3 packs). Only as the writer closes: no pack can be created meanwhile (this writer holds LOCK, and its
    /// maintenance has stopped), and rmdir(2) removes only an empty directory.
    /// </summary>
    private void RemoveEmptyPackDirectories()
    {
        try
        {
            foreach (var dir in Directory.EnumerateDirectories(Path.Combine(TraceDir, "packs")))
            {
                if (!Directory.EnumerateFileSystemEntries(dir).Any())
                {
                    Directory.Delete(dir);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // best effort: an empty directory costs a few KiB
        }
    }

    /// <summary>
    /// Builds a new catalog under a temporary name and renames it into place once its tables are committed and
    /// synced: a write that fails while it is made (disk full, I/O error) leaves no catalog.db, so there is still no
    /// trace and the next writer starts again, never a catalog.db without its tables that no command could open.
    /// </summary>
    private static void CreateCatalog(string catalogPath)
    {
        var temp = catalogPath + ".new";
        try
        {
            foreach (var stale in new[] { temp, temp + "-journal", temp + "-wal", temp + "-shm" })
            {
                File.Delete(stale);
            }

            using (var db = SqliteDatabase.Create(temp))
            {
                CatalogSchema.CreateOrCheck(db, temp);
            }

            // synchronous=FULL: the commit synced the file; the rename is synced with its directory.
            File.Move(temp, catalogPath);
            _ = Native.Interop.Libc.FsyncPath(Path.GetDirectoryName(catalogPath)!, directory: true);
        }
        catch (CatalogException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError,
                $"cannot create the catalog {catalogPath}: {(e.ErrorCode == 13 ? "no space left on the device" : e.Message)}", e);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "create the catalog", catalogPath);
        }
    }

    private void Recover()
    {
        // Cutting a tail and deleting a pack file are the places a writer destroys bytes, so what they rely on is
        // checked first: committed sizes in their domain, and no blob row naming a record beyond the cut or in a
        // file about to be deleted (a catalog that says otherwise is damaged; cutting would destroy records that
        // verify finds intact). Only packs about to be cut are scanned, so an ordinary open costs nothing more.
        var packs = new List<(long Id, long Size)>();
        using (var select = _db.Prepare($"SELECT id, committed_size, {CatalogDomain.Broken("packs")} FROM packs"))
        {
            while (select.Step())
            {
                var (id, size) = (select.Int64(0), select.Int64(1));
                if (!select.IsNull(2))
                {
                    throw CatalogDomain.Throw("packs", id.ToString(System.Globalization.CultureInfo.InvariantCulture), select.String(2));
                }

                packs.Add((id, size));
            }
        }

        foreach (var (id, size) in packs)
        {
            var path = Path.Combine(TraceDir, PackFormat.RelativePath(id));
            SafeFileHandle h;
            try
            {
                h = TraceFile.OpenRegular(path, write: true);
            }
            catch (FileNotFoundException)
            {
                continue;
            }

            using (h)
            {
                if (RandomAccess.GetLength(h) > size)
                {
                    RefuseToDestroy(id, size);
                    RandomAccess.SetLength(h, size);
                    RandomAccess.FlushToDisk(h);
                }
            }
        }

        var left = DeleteUnreferencedPacks(packs.Select(p => p.Id).ToHashSet());
        _nextPackId = packs.Select(p => p.Id).Concat(left).DefaultIfEmpty(0).Max() + 1;
        _db.Execute("UPDATE sessions SET state = 'interrupted' WHERE state = 'recording'");
    }

    /// <summary>Exit 5 when a blob row names bytes of pack <paramref name="id"/> at or beyond <paramref name="keep"/>.</summary>
    private void RefuseToDestroy(long id, long keep)
    {
        using var end = _db.Prepare($"SELECT max(offset + {PackFormat.RecordSize(0)} + stored_len) FROM blobs WHERE pack_id = ?1");
        if (end.Bind(1, id).ScalarInt64() is { } last && last > keep)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, keep == 0
                ? $"the catalog is damaged: blob rows name records in {PackFormat.RelativePath(id)}, which the packs table does not list; refusing to delete it ('diffkeeper verify' tells what is damaged)"
                : $"the catalog is damaged: {PackFormat.RelativePath(id)} has committed size {keep}, but blob rows name records up to byte {last}; refusing to cut the pack ('diffkeeper verify' tells what is damaged)");
        }
    }

    /// <summary>
    /// Deletes pack files the catalog does not list: a pack a crash left before its first commit, or one garbage
    /// collection emptied. Only while no reader has the trace open (<see cref="ReaderLock"/>); returns the ids of
    /// the files it had to leave.
    /// </summary>
    internal IReadOnlyList<long> DeleteUnreferencedPacks(IReadOnlySet<long> known)
    {
        var garbage = new List<(long Id, string File)>();
        var packsDir = Path.Combine(TraceDir, "packs");
        if (Directory.Exists(packsDir))
        {
            foreach (var file in Directory.EnumerateFiles(packsDir, "*.pack", SearchOption.AllDirectories))
            {
                if (long.TryParse(Path.GetFileNameWithoutExtension(file), System.Globalization.NumberStyles.HexNumber, null, out var id) &&
                    !known.Contains(id) && id != _pack?.PackId && !DeletedAtClose(file))
                {
                    RefuseToDestroy(id, 0);
                    garbage.Add((id, file));
                }
            }
        }

        return DeleteFiles(garbage);
    }

    /// <summary>The catalog connection, for the maintenance steps (prune, compaction, collection) in this assembly.</summary>
    internal SqliteDatabase Database => _db;

    /// <summary>Opens the write transaction if none is open (everything until <see cref="Commit"/> is one transaction).</summary>
    internal void Begin() => Tx();

    /// <summary>The pack this writer appends to, or -1 before its first blob.</summary>
    internal long CurrentPackId => _pack?.PackId ?? -1;

    /// <summary>
    /// Closes the pack this writer appends to if it is <paramref name="packId"/> and nothing is pending (its
    /// committed size is then already in the catalog); the next blob starts a new pack. Returns whether this writer
    /// no longer appends to that pack. Maintenance rolls the writer's pack to repack it when most of it is garbage.
    /// </summary>
    internal bool RollPack(long packId)
    {
        if (_pack is not null && _pack.PackId == packId && !_inTransaction)
        {
            _pack.Flush();
            _pack.Dispose();
            _pack = null;
        }

        return _pack?.PackId != packId;
    }

    /// <summary>The number the next pack created will get; every later pack gets a greater one.</summary>
    internal long NextPackId => Interlocked.Read(ref _nextPackId);

    /// <summary>
    /// From now on, remembers the blob rows that versions added name (<see cref="ReferencedSinceTracking"/>), until
    /// <see cref="StopTrackingReferences"/>. A maintenance pass calls it before it reads the catalog, so every version
    /// it did not see is tracked.
    /// </summary>
    internal void TrackReferences()
    {
        _ownsAllBlobs = false; // maintenance may move, re-encode or add rows this writer does not know of
        _referenced = [];
        _untracked.Clear();
    }

    internal void StopTrackingReferences()
    {
        _referenced = null;
        _untracked.Clear();
    }

    /// <summary>Blob rows named by versions added since <see cref="TrackReferences"/>; empty when not tracking.</summary>
    internal IReadOnlySet<long> ReferencedSinceTracking
    {
        get
        {
            if (_referenced is null)
            {
                return EmptyRows;
            }

            // Decoded here, by the maintenance step that asks, not in AddVersion: in keep mode versions are added
            // during a cut, while the app is stopped.
            foreach (var (map, size) in _untracked)
            {
                if (ExtentMap.TryDecode(map, size, out var extents))
                {
                    foreach (var e in extents)
                    {
                        _referenced.Add(e.BlobRowId);
                    }
                }
            }

            _untracked.Clear();
            return _referenced;
        }
    }

    private readonly List<(byte[] Map, long Size)> _untracked = [];

    private static readonly HashSet<long> EmptyRows = [];

    /// <summary>
    /// Forgets what this writer knows about blobs that maintenance deleted or re-encoded: a deleted row must not be
    /// named again, and a re-encoded one must be looked up again (it may be a delta now, which a new version gets whole).
    /// </summary>
    internal void ForgetBlobs(IEnumerable<BlobId> ids)
    {
        _ownsAllBlobs = false;
        foreach (var id in ids)
        {
            _newBlobs.Remove(id);
            _deltaRows.Remove(id);
        }
    }

    /// <summary>Rolls back the open transaction (a maintenance step that failed; nothing else is in it then).</summary>
    internal void Rollback()
    {
        _group = null;
        DiscardEncodedGroups();
        _aligned = null;
        _runOpen = false;
        if (_inTransaction && _db.InTransaction)
        {
            _db.Execute("ROLLBACK");
        }

        _inTransaction = false;
        _uncommittedRows.Clear();
    }

    /// <summary>
    /// Deletes these pack files, which committed transactions no longer list, when no reader has the trace open
    /// (<see cref="ReaderLock"/>); returns the ids it had to leave. Thread-safe.
    /// </summary>
    public IReadOnlyList<long> DeletePackFiles(IReadOnlyCollection<long> ids) =>
        DeleteFiles([.. ids.Select(id => (id, Path.Combine(TraceDir, PackFormat.RelativePath(id))))]);

    /// <summary>
    /// Pack files maintenance dropped are deleted as this writer closes, after the close has checkpointed and synced
    /// the catalog, instead of after a sync of their own (<see cref="SyncToDisk"/>: the WAL and the database, two of
    /// a W1 `record`'s thirteen fsyncs, ~1-6 ms each). For a writer that closes right after a pass (<c>gc</c>, the
    /// pass after a session); a kill before the close leaves the files to the next writer, which deletes pack files
    /// the catalog does not list as it opens. Thread-safe.
    /// </summary>
    public bool DeletesPackFilesAtClose { get; set; }

    private readonly HashSet<string> _deleteAtClose = [];

    // A file already put off to the close was checked when it was dropped: not scanned for again (RefuseToDestroy
    // reads every blob row of the catalog, pack_id having no index).
    private bool DeletedAtClose(string file)
    {
        lock (_deleteAtClose)
        {
            return _deleteAtClose.Contains(file);
        }
    }

    /// <summary>
    /// The close's part of <see cref="DeletesPackFilesAtClose"/>: the catalog is closed, so a missing WAL means a
    /// checkpoint (the close's, or the last reader's) moved every commit into the database and synced it; the files
    /// go only then and without readers, else they stay for the next writer.
    /// </summary>
    private void DeleteFilesAfterClose()
    {
        string[] files;
        lock (_deleteAtClose)
        {
            files = [.. _deleteAtClose];
            _deleteAtClose.Clear();
        }

        if (files.Length == 0)
        {
            return;
        }

        using var exclusive = ReaderLock.TryExclusive(TraceDir);
        if (exclusive is null || File.Exists(Path.Combine(TraceDir, "catalog.db-wal")))
        {
            return;
        }

        foreach (var file in files)
        {
            try
            {
                File.Delete(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // The session or collection is complete: a file that cannot go now is the next writer's to delete
                // (it deletes pack files the catalog does not list as it opens), not a failure of this one.
            }
        }
    }

    /// <summary>
    /// Deletes the files when no reader has the trace open and the catalog is synced (<see cref="SyncToDisk"/>): the
    /// commits that stopped naming them may be in the page cache only (<c>synchronous=NORMAL</c>, also maintenance's),
    /// and a power cut must not bring back rows naming deleted files. Returns the ids of those it had to leave.
    /// </summary>
    private IReadOnlyList<long> DeleteFiles(IReadOnlyCollection<(long Id, string File)> files)
    {
        if (files.Count == 0)
        {
            return [];
        }

        if (DeletesPackFilesAtClose)
        {
            // Tried again as the writer closes, whatever a reader does now; said to be left if one holds the trace now.
            lock (_deleteAtClose)
            {
                _deleteAtClose.UnionWith(files.Select(f => f.File));
            }

            using var now = ReaderLock.TryExclusive(TraceDir);
            return now is null ? [.. files.Select(f => f.Id)] : [];
        }

        using var exclusive = ReaderLock.TryExclusive(TraceDir);
        if (exclusive is null || !SyncToDisk())
        {
            return [.. files.Select(f => f.Id)];
        }

        foreach (var (_, file) in files)
        {
            File.Delete(file);
        }

        return [];
    }


    /// <summary>
    /// Adds a session in state 'recording' and its roots. With <paramref name="commit"/> (the recorder) they are
    /// committed at once, so a crash leaves the session marked interrupted by the next writer; without it (snapshot)
    /// they commit with everything else the session adds, so a crash leaves no trace of the session at all.
    /// </summary>
    public long BeginSession(string command, string cwd, string capture, long startedWallNs, IReadOnlyList<string> roots, out IReadOnlyList<long> rootIds,
        bool commit = true)
    {
        Tx();
        using (var insert = _db.Prepare("INSERT INTO sessions(command, cwd, capture, started_wall_ns, host, state) VALUES (?1, ?2, ?3, ?4, ?5, 'recording')"))
        {
            insert.Bind(1, command).Bind(2, cwd).Bind(3, capture).Bind(4, startedWallNs).Bind(5, Environment.MachineName).Run();
        }

        var sessionId = _db.LastInsertRowId;
        var ids = new List<long>();
        // A directory an earlier session watched keeps its path rows: this session names its paths with them.
        using (var findOwner = _db.Prepare("SELECT coalesce(paths_root, id) FROM roots WHERE path = ?1 ORDER BY id LIMIT 1"))
        using (var insertRoot = _db.Prepare("INSERT INTO roots(session_id, path, paths_root) VALUES (?1, ?2, ?3)"))
        {
            foreach (var root in roots)
            {
                var owner = findOwner.BindPath(1, root).ScalarInt64();
                insertRoot.Bind(1, sessionId).BindPath(2, root).Bind(3, owner).Run();
                var id = _db.LastInsertRowId;
                _pathOwners[id] = owner ?? id;
                ids.Add(id);
            }
        }

        rootIds = ids;
        if (commit)
        {
            Commit();
        }

        return sessionId;
    }

    /// <summary>
    /// Before the baseline of <paramref name="sessionId"/> (every root walked): when an earlier session watched the same
    /// directories, naming their paths with the same path rows (the same path owners, in the same order), the baseline stores only the paths whose version differs from the one that session's end state
    /// holds, and <see cref="EndBaseline"/> marks the others absent and names that session in
    /// <c>sessions.baseline_from</c> (docs/store-format.md, "Catalog"). Returns the session inherited from, or null.
    /// </summary>
    public long? InheritBaseline(long sessionId)
    {
        using var find = _db.Prepare("""
            WITH mine(list) AS (SELECT group_concat(o, '/') FROM (SELECT coalesce(paths_root, id) AS o FROM roots WHERE session_id = ?1 ORDER BY id))
            SELECT s.id FROM sessions s, mine WHERE s.id < ?1 AND mine.list IS NOT NULL
              AND (SELECT group_concat(o, '/') FROM (SELECT coalesce(paths_root, id) AS o FROM roots WHERE session_id = s.id ORDER BY id)) = mine.list
            ORDER BY s.id DESC LIMIT 1
            """);
        if (find.Bind(1, sessionId).ScalarInt64() is not { } from)
        {
            return null;
        }

        var chain = CatalogSchema.BaselineChain(_db, from, MaxBaselineChain);
        if (chain.Count == MaxBaselineChain)
        {
            return null; // a whole baseline again: states stay cheap to read
        }

        chain.Insert(0, from);

        _inheritingSession = sessionId;
        _baselineChain = [.. chain];
        _baselineSeen.Clear();
        _inheritedVersion?.Dispose();
        _inheritedVersion = _db.Prepare($"""
            SELECT id, kind, mode, uid, gid, mtime_ns, size, content, target, extents, link, pruned FROM versions
            WHERE path_id = ?1 AND session_id IN ({string.Join(", ", _baselineChain)}) ORDER BY id DESC LIMIT 1
            """);
        return from;
    }

    /// <summary>
    /// Ends the baseline <see cref="InheritBaseline"/> began: the paths the inherited state holds and the baseline did
    /// not see get an absent version, and the session names the one it inherits from, in the current transaction.
    /// Also called by the first version after the baseline.
    /// </summary>
    public void EndBaseline(long sessionId)
    {
        if (_inheritingSession != sessionId || sessionId == 0)
        {
            return;
        }

        _inheritingSession = 0;
        _bases.Forget();
        if (_abandoned)
        {
            return; // the baseline was given up with its transaction: the session inherits nothing
        }

        Tx();
        var gone = new List<long>();
        using (var present = _db.Prepare($"""
            SELECT path_id FROM versions WHERE kind != 0 AND id IN (
                SELECT max(id) FROM versions WHERE session_id IN ({string.Join(", ", _baselineChain)}) GROUP BY path_id)
            """))
        {
            while (present.Step())
            {
                if (!_baselineSeen.Contains(present.Int64(0)))
                {
                    gone.Add(present.Int64(0));
                }
            }
        }

        foreach (var pathId in gone)
        {
            _insertVersion.Bind(1, sessionId).Bind(2, pathId).Bind(3, 0L).Bind(4, 0L).Bind(5, (long)EntryKind.Absent).Bind(6, 0L)
                .Bind(7, 0L).Bind(8, 0L).Bind(9, 0L).Bind(10, 0L).Bind(11, (byte[]?)null).BindPath(12, null).Bind(13, (byte[]?)null).Bind(14, (long?)null).Run();
        }

        _uncommittedVersionsFrom = Math.Min(_uncommittedVersionsFrom, 0);
        using (var mark = _db.Prepare("UPDATE sessions SET baseline_from = ?1 WHERE id = ?2"))
        {
            mark.Bind(1, _baselineChain[0]).Bind(2, sessionId).Run();
        }

        _baselineSeen.Clear();
    }

    /// <summary>The inherited state's version of a baseline path, when <paramref name="v"/> is exactly it (so it is not stored again).</summary>
    private long? SameAsInherited(NewVersion v)
    {
        _baselineSeen.Add(v.PathId);
        if (v.Link is not null)
        {
            return null; // a link group's number belongs to its session
        }

        var r = _inheritedVersion!.Bind(1, v.PathId);
        try
        {
            if (!r.Step())
            {
                return null;
            }

            var same = r.Int64(1) == (long)v.Kind && r.Int64(2) == v.Mode && r.Int64(3) == v.Uid && r.Int64(4) == v.Gid
                && r.Int64(5) == v.MtimeNs && r.Int64(6) == v.Size && r.IsNull(10) && r.Int64(11) == 0
                && SameBytes(r.BlobOrNull(7), v.ContentId) && r.PathOrNull(8) == v.Target && SameBytes(r.BlobOrNull(9), v.Extents);
            return same ? r.Int64(0) : null;
        }
        finally
        {
            r.Reset();
        }

        static bool SameBytes(byte[]? a, byte[]? b) => a is null ? b is null : b is not null && a.AsSpan().SequenceEqual(b);
    }

    /// <summary>Sets the time 0 of a session (the moment its command started).</summary>
    public void SetSessionStart(long sessionId, long startedWallNs)
    {
        Tx();
        using var update = _db.Prepare("UPDATE sessions SET started_wall_ns = ?1 WHERE id = ?2");
        update.Bind(1, startedWallNs).Bind(2, sessionId).Run();
    }

    public void FinishSession(long sessionId, long endedNs, int? exitCode, long lostEvents)
    {
        Tx();
        using (var update = _db.Prepare("UPDATE sessions SET ended_ns = ?1, exit_code = ?2, lost_events = ?3, state = 'finished' WHERE id = ?4"))
        {
            update.Bind(1, endedNs).Bind(2, (long?)exitCode).Bind(3, lostEvents).Bind(4, sessionId).Run();
        }

        Commit();
    }

    /// <summary>
    /// Meta key: every version up to this id was covered by a maintenance pass that finished (docs/store-format.md,
    /// "Compaction, prune and garbage collection"). A pass deletes it when it begins and writes it when it ends.
    /// </summary>
    internal const string MaintainedThroughKey = "maintained_through_version";

    /// <summary>
    /// meta key (format 6): the greatest blob row id a grouping pass has considered. Whole small blobs at or below
    /// it were grouped or judged not worth a group; only those above it are new to grouping.
    /// </summary>
    internal const string GroupedThroughKey = "grouped_through_blob";

    /// <summary>
    /// Whether a maintenance pass with the default options could find anything to do: some version after the last
    /// finished pass (<see cref="MaintainedThroughKey"/>; all of them when none is recorded) holds other content
    /// than the version of its path before it, which named a blob that is not a base of the new version's own deltas
    /// (<see cref="SupersedesOnlyItsBases"/>; an empty file's version supersedes nothing
    /// stored: 20,000 new files made a pass that found nothing for 0.7 s), or, with no finished pass recorded, some version was pruned, or
    /// whole small blobs no grouping pass considered yet (above <see cref="GroupedThroughKey"/>) add up to at least
    /// <see cref="Maintenance.Grouper.SmallGroup"/> bytes and are at least <see cref="Maintenance.Grouper.FewestForAPass"/>. None:
    /// nothing was superseded since (a path's newest content stays whole), nothing was left unswept and nothing
    /// waits for a group, so <c>record</c> skips its pass after the session.
    /// </summary>
    /// <param name="supersededNothingAfter">A version id after which the caller knows no version replaced a chunk
    /// stored whole (the recorder counts them: <c>Versioner.ContentsSuperseded</c>); when the last finished pass
    /// covered every version up to it, the versions are not read at all.</param>
    public bool HasMaintenanceWork(long? supersededNothingAfter = null)
    {
        using var mark = _db.Prepare("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1");
        var through = mark.Bind(1, MaintainedThroughKey).ScalarInt64();
        var read = !(supersededNothingAfter is { } after && (through ?? 0) >= after);
        // Versions of one logical path (a root's absolute path and the relative path, across sessions), in order,
        // each beside the one before it; only the paths a version after the mark touched are read.
        using var replaced = _db.Prepare("""
            WITH recent AS (
                SELECT DISTINCT r.path AS root, pa.rel AS rel FROM versions v
                JOIN paths pa ON pa.id = v.path_id JOIN roots r ON r.id = pa.root_id WHERE v.id > ?1),
            history AS (
                SELECT v.id AS id, v.content AS content, v.extents AS extents,
                       lag(v.id) OVER w AS prev, lag(v.content) OVER w AS prev_content, lag(v.extents) OVER w AS prev_extents
                FROM versions v JOIN paths pa ON pa.id = v.path_id JOIN roots r ON r.id = pa.root_id
                JOIN recent ON recent.root = r.path AND recent.rel = pa.rel
                WHERE v.content IS NOT NULL OR v.extents IS NOT NULL
                WINDOW w AS (PARTITION BY r.path, pa.rel ORDER BY v.id))
            SELECT extents, prev_extents FROM history
                WHERE id > ?1 AND prev IS NOT NULL AND length(prev_extents) > 1 AND (content IS NOT prev_content OR extents IS NOT prev_extents)
            """);
        if (read)
        {
            Dictionary<long, long>? own = null;
            try
            {
                replaced.Bind(1, through ?? 0);
                while (replaced.Step())
                {
                    if (!SupersedesOnlyItsBases(replaced.BlobOrNull(0), replaced.BlobOrNull(1), ref own))
                    {
                        return true;
                    }
                }
            }
            finally
            {
                _bases.Forget();
            }
        }

        // Small whole blobs no pass considered for a group yet (format 6), enough for one: a first session of a
        // source tree has nothing to compact but most of what grouping saves. Those a pass found not worth a group
        // lie below the mark and never bring a pass back.
        // Enough bytes and enough members: a group gains from many small blobs sharing one frame; a handful of
        // chunks cut from the middle of big files (a 130 MB untar left 7, 276 KB raw, 46 KB stored) gained 5 KB from
        // a pass that read the untar's 35,000 versions for ~1 s.
        // Only those whose records the pass's repack would free count (Grouper.Reclaimed): grouping 77 stray chunks of
        // an untar's 14 MB pack freed nothing and added their group.
        using var small = _db.Prepare(
            "SELECT pack_id, coalesce(sum(raw_len), 0), count(*), sum(stored_len) + count(*) * ?4 FROM blobs WHERE codec = ?1 AND raw_len <= ?2 AND id > ?3 GROUP BY pack_id");
        mark.Bind(1, GroupedThroughKey);
        var grouped = mark.ScalarInt64() ?? 0;
        small.Bind(1, (long)BlobCodec.Zstd).Bind(2, (long)Maintenance.Grouper.MaxMember).Bind(3, grouped).Bind(4, (long)PackFormat.RecordSize(0));
        var waiting = new List<(long Pack, long Raw, long Count, long Leaving)>();
        while (small.Step())
        {
            waiting.Add((small.Int64(0), small.Int64(1), small.Int64(2), small.Int64(3)));
        }

        // Dead records alone bring no pass (a pack no repack can clear, damaged or over the budget, would bring one
        // after every `record`): the pass that runs for other work repacks them (Maintenance.RepackRule).
        static bool EnoughForAGroup(List<(long Pack, long Raw, long Count, long Leaving)> blobs) =>
            blobs.Sum(w => w.Raw) >= Maintenance.Grouper.SmallGroup && blobs.Sum(w => w.Count) >= Maintenance.Grouper.FewestForAPass;

        if (EnoughForAGroup(waiting))
        {
            // One scan for the live bytes of the packs concerned (blobs has no index on pack_id): without the budget,
            // as Grouper.Reclaimed counts, the rule takes a pack or not by its own bytes alone.
            var ids = string.Join(",", waiting.Select(w => w.Pack.ToString(System.Globalization.CultureInfo.InvariantCulture)));
            var liveBytes = new Dictionary<long, long>();
            using (var live = _db.Prepare($"SELECT pack_id, sum(stored_len) + count(*) * ?1 FROM blobs WHERE pack_id IN ({ids}) AND codec <> ?2 GROUP BY pack_id"))
            {
                live.Bind(1, (long)PackFormat.RecordSize(0)).Bind(2, (long)BlobCodec.Slice);
                while (live.Step())
                {
                    liveBytes[live.Int64(0)] = live.Int64(1);
                }
            }

            var packs = new List<(long, long)>();
            using (var sizes = _db.Prepare($"SELECT id, committed_size FROM packs WHERE id IN ({ids})"))
            {
                while (sizes.Step())
                {
                    packs.Add((sizes.Int64(0), sizes.Int64(1)));
                }
            }

            foreach (var w in waiting)
            {
                liveBytes[w.Pack] = liveBytes.GetValueOrDefault(w.Pack) - w.Leaving;
            }

            var taken = Maintenance.RepackRule.Taken(packs, liveBytes, new Maintenance.MaintenanceOptions().RepackThreshold, budget: 0);
            var freed = waiting.Where(w => taken.Contains(w.Pack)).ToList();
            if (EnoughForAGroup(freed))
            {
                return true;
            }
        }

        using var pruned = _db.Prepare("SELECT EXISTS(SELECT 1 FROM versions WHERE pruned = 1)");
        return through is null && pruned.ScalarInt64() == 1;
    }

    /// <summary>
    /// Whether a version (extent map <paramref name="extents"/>) that replaced <paramref name="previous"/> leaves
    /// compaction nothing: every chunk of the previous version it no longer names is a base of one of its own deltas
    /// (a delta written while recording, docs/store-format.md), which compaction can never re-encode (the delta
    /// depends on it), and a group holding it counts it as live. W3's sessions: the pass after each found nothing
    /// and cost ~0.1 s of CPU. Or it is a slice whose share of its group could not pay for a delta's record
    /// (<see cref="Maintenance.Compactor"/>'s rule): the shorter states of a file appended to own nothing of their group
    /// (<see cref="Maintenance.GroupSpans"/>), and a write storm's every version replaced its tail so.
    /// </summary>
    /// <param name="own">The bytes each slice alone covers in its group: read from the catalog the first time a
    /// slice is asked about (one scan of the slices).</param>
    private bool SupersedesOnlyItsBases(byte[]? extents, byte[]? previous, ref Dictionary<long, long>? own)
    {
        if (extents is null || previous is null || !ExtentMap.TryDecode(extents, long.MaxValue, out var now) ||
            !ExtentMap.TryDecode(previous, long.MaxValue, out var before))
        {
            return false;
        }

        var kept = now.Select(e => e.BlobRowId).ToHashSet();
        var bases = new HashSet<long>();
        foreach (var row in kept)
        {
            if (_bases.Location(row) is { IsDelta: true } delta)
            {
                bases.UnionWith(delta.Bases);
            }
        }

        foreach (var e in before)
        {
            if (kept.Contains(e.BlobRowId) || bases.Contains(e.BlobRowId))
            {
                continue;
            }

            if (_bases.Location(e.BlobRowId) is not { IsSlice: true, Bases: [var group] } || _bases.Location(group) is not { RawLength: > 0 } g)
            {
                return false;
            }

            own ??= SliceOwnBytes();
            if (!Maintenance.Compactor.SliceCannotPay(g.StoredLength, g.RawLength, own.GetValueOrDefault(e.BlobRowId)))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>For every slice, the bytes of its group only it covers (<see cref="Maintenance.GroupSpans.Own"/>).</summary>
    private Dictionary<long, long> SliceOwnBytes()
    {
        var slices = new List<(long, long, long, int)>();
        using (var read = _db.Prepare("SELECT id, bases, offset, raw_len FROM blobs WHERE codec = ?1"))
        {
            read.Bind(1, (long)BlobCodec.Slice);
            while (read.Step())
            {
                if (read.BlobOrNull(1) is { } b && PackFormat.DecodeBases(b) is [var group])
                {
                    slices.Add((read.Int64(0), group, read.Int64(2), (int)read.Int64(3)));
                }
            }
        }

        return Maintenance.GroupSpans.OwnBySlice(slices);
    }

    /// <summary>Records <see cref="GroupedThroughKey"/> in the transaction of the maintenance step that calls it.</summary>
    internal void SetGroupedThrough(long blobRowId)
    {
        Tx();
        using var set = _db.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)");
        set.Bind(1, GroupedThroughKey).Bind(2, blobRowId.ToString(System.Globalization.CultureInfo.InvariantCulture)).Run();
    }

    /// <summary>The greatest version id (0 when none): what a pass beginning now covers.</summary>
    public long LastVersionId
    {
        get
        {
            using var max = _db.Prepare("SELECT coalesce(max(id), 0) FROM versions");
            return max.ScalarInt64() ?? 0;
        }
    }

    /// <summary>Records that a finished pass covered every version up to <paramref name="versionId"/> (null: forget it); commits.</summary>
    internal void SetMaintainedThrough(long? versionId)
    {
        Tx();
        if (versionId is { } id)
        {
            using var set = _db.Prepare("INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)");
            set.Bind(1, MaintainedThroughKey).Bind(2, id.ToString(System.Globalization.CultureInfo.InvariantCulture)).Run();
        }
        else
        {
            using var forget = _db.Prepare("DELETE FROM meta WHERE key = ?1");
            forget.Bind(1, MaintainedThroughKey).Run();
        }

        Commit();
    }

    /// <summary>
    /// Gives up everything added since the last commit after a failed write (disk full, I/O error): rolls the
    /// catalog transaction back and cuts the pack this writer appended to back to its committed size (deleting it
    /// when no commit named it), so the space its uncommitted records took is free again. Afterwards only events
    /// and the session's end may be written (<see cref="AddEvent"/>, <see cref="FinishSession"/>); blobs, paths and
    /// versions are refused. Returns the greatest committed event seq of <paramref name="sessionId"/>.
    /// </summary>
    public long AbandonPending(long sessionId)
    {
        _abandoned = true;
        _group = null;
        DiscardEncodedGroups();
        _aligned = null;
        _runOpen = false; // its events were never committed: a run never spans a commit
        AbandonedVersionsFrom = Math.Min(AbandonedVersionsFrom, _uncommittedVersionsFrom);
        _uncommittedVersionsFrom = long.MaxValue;
        if (_inTransaction)
        {
            _inTransaction = false;
            if (_db.InTransaction) // SQLite rolls a transaction back by itself on some failures (SQLITE_FULL)
            {
                _db.Execute("ROLLBACK");
            }
        }

        if (_pack is { } pack)
        {
            _pack = null;
            using var committed = _db.Prepare("SELECT committed_size FROM packs WHERE id = ?1");
            var keep = committed.Bind(1, pack.PackId).ScalarInt64();
            pack.Discard(keep ?? PackFormat.HeaderSize);
            if (keep is null)
            {
                File.Delete(Path.Combine(TraceDir, PackFormat.RelativePath(pack.PackId)));
            }
        }

        return LastSeq(sessionId);
    }

    /// <summary>The greatest event seq of the session in the catalog (0: none), the events of a run included.</summary>
    private long LastSeq(long sessionId)
    {
        using var last = _db.Prepare("SELECT seq, run FROM events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1");
        if (!last.Bind(1, sessionId).Step())
        {
            return 0;
        }

        var seq = last.Int64(0);
        var run = last.BlobOrNull(1);
        last.Reset();
        return run is null ? seq : seq + (EventRun.Followers(run)
            ?? throw CatalogDomain.Throw("events", $"{sessionId}/{seq}", $"its write run does not start with a count 1 to {EventRun.MaxFollowers}"));
    }

    private bool _abandoned;

    // The least seq of the versions added since the last commit (long.MaxValue: none).
    private long _uncommittedVersionsFrom = long.MaxValue;

    /// <summary>
    /// The least seq of the versions <see cref="AbandonPending"/> gave up (long.MaxValue: none). Events up to the last
    /// committed one may have been committed before the version that holds their content (a version belongs to the
    /// latest event that touched its path and is written when the file is read): from this seq on they have none.
    /// </summary>
    public long AbandonedVersionsFrom { get; private set; } = long.MaxValue;

    /// <summary>
    /// After <see cref="AbandonPending"/>: deletes the committed events and versions of <paramref name="sessionId"/> from
    /// <paramref name="seq"/> on (their content was not stored, so the timeline must end before them, where the LOST
    /// event that follows says so). Commits with the next <see cref="Commit"/>.
    /// </summary>
    public void RetractFrom(long sessionId, long seq)
    {
        FlushRun();
        Tx();
        using var events = _db.Prepare("DELETE FROM events WHERE session_id = ?1 AND seq >= ?2");
        events.Bind(1, sessionId).Bind(2, seq).Run();
        CutRunAt(sessionId, seq);
        using var versions = _db.Prepare("DELETE FROM versions WHERE session_id = ?1 AND seq >= ?2");
        versions.Bind(1, sessionId).Bind(2, seq).Run();
    }

    /// <summary>Shortens the write run that spans <paramref name="seq"/> (the last row before it) to its events before it.</summary>
    private void CutRunAt(long sessionId, long seq)
    {
        long first;
        byte[]? run;
        RunStep head;
        using (var last = _db.Prepare("SELECT seq, time_ns, offset, length, size, run FROM events WHERE session_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT 1"))
        {
            if (!last.Bind(1, sessionId).Bind(2, seq).Step() || last.IsNull(5))
            {
                return;
            }

            first = last.Int64(0);
            head = new RunStep(first, last.Int64(1), last.Int64OrNull(2), last.Int64OrNull(3), last.Int64OrNull(4));
            run = last.BlobOrNull(5)!;
        }

        if (!EventRun.TryDecode(run, head, [], out var error))
        {
            throw CatalogDomain.Throw("events", $"{sessionId}/{first}", error!);
        }

        if (first + EventRun.Followers(run)!.Value < seq)
        {
            return;
        }

        using var cut = _db.Prepare("UPDATE events SET run = ?3 WHERE session_id = ?1 AND seq = ?2");
        cut.Bind(1, sessionId).Bind(2, first).Bind(3, EventRun.Cut(run, head, (int)(seq - first - 1))).Run();
    }

    private void RefuseAfterAbandon()
    {
        if (_abandoned)
        {
            throw new InvalidOperationException("this writer gave up its pending changes after a failed write; only events may follow");
        }
    }

    /// <summary>
    /// The path row of <paramref name="rel"/> under root <paramref name="rootId"/>: under its path owner, found when an
    /// earlier session of the same directory made it, made otherwise.
    /// </summary>
    public long PathId(long rootId, string rel)
    {
        RefuseAfterAbandon();
        if (rootId == _lastPathRoot && ReferenceEquals(rel, _lastPathRel))
        {
            return _lastPathId; // the same name again: a file's events and versions ask for it one after another
        }

        var id = PathIdOf(rootId, rel);
        (_lastPathRoot, _lastPathRel, _lastPathId) = (rootId, rel, id);
        return id;
    }

    // The last path id asked for, by the string's identity: a created file's CREATE, its version, its WRITE and that
    // version name one string (the capture source's), so three of four lookups were of the key just looked up (20,000
    // creates: each a miss in two tables of 20,000 entries). A root's owner and a name's row never change once made.
    private long _lastPathRoot = -1;
    private string? _lastPathRel;
    private long _lastPathId;

    private long PathIdOf(long rootId, string rel)
    {
        var owner = _pathOwners.GetValueOrDefault(rootId, rootId);
        if (_pathIds.TryGetValue((owner, rel), out var id))
        {
            return id;
        }

        Tx();
        if (owner != rootId)
        {
            _findPath ??= _db.Prepare("SELECT id FROM paths WHERE root_id = ?1 AND rel = ?2");
            if (_findPath.Bind(1, owner).BindPath(2, rel).ScalarInt64() is { } found)
            {
                _pathIds[(owner, rel)] = found;
                return found;
            }
        }

        _insertPath.Bind(1, owner).BindPath(2, rel).Run();
        id = _db.LastInsertRowId;
        _pathIds[(owner, rel)] = id;
        return id;
    }

    /// <summary>
    /// Adds an event. Consecutive writes of one process to one path become one row (a write run, format 7), written
    /// when an event does not extend the run and at the latest by the next <see cref="Commit"/>.
    /// </summary>
    public void AddEvent(long sessionId, in NewEvent e)
    {
        _sizeLimit?.Check(0);
        Tx();
        if (_runOpen && _run.TryAppend(sessionId, e))
        {
            return;
        }

        FlushRun();
        if (EventRun.CanStart(e))
        {
            _run.Start(sessionId, e);
            _runOpen = true;
            return;
        }

        InsertEvent(sessionId, e, null);
    }

    /// <summary>Inserts the row of the run being built, if any.</summary>
    private void FlushRun()
    {
        if (!_runOpen)
        {
            return;
        }

        _runOpen = false; // also when the insert fails: its transaction is given up with it
        Tx();
        InsertEvent(_run.SessionId, _run.First, _run.Followers == 0 ? null : _run.Encoded());
    }

    private void InsertEvent(long sessionId, in NewEvent e, byte[]? run) =>
        _insertEvent.Bind(1, sessionId).Bind(2, e.Seq).Bind(3, e.TimeNs).Bind(4, (long)e.Op).Bind(5, e.PathId).Bind(6, e.Path2Id)
            .Bind(7, e.Size).Bind(8, (long?)e.Pid).Bind(9, e.Comm).Bind(10, e.Detail)
            .Bind(11, e.Offset).Bind(12, e.Length).Bind(13, run).Run();

    public long AddVersion(long sessionId, NewVersion v)
    {
        RefuseAfterAbandon();
        if (_inheritingSession == sessionId && sessionId != 0)
        {
            if (v.Seq != 0)
            {
                EndBaseline(sessionId);
            }
            else if (SameAsInherited(v) is { } inherited)
            {
                return inherited;
            }
        }

        Tx();
        _uncommittedVersionsFrom = Math.Min(_uncommittedVersionsFrom, v.Seq);
        _insertVersion.Bind(1, sessionId).Bind(2, v.PathId).Bind(3, v.Seq).Bind(4, v.TimeNs).Bind(5, (long)v.Kind).Bind(6, v.Mode)
            .Bind(7, v.Uid).Bind(8, v.Gid).Bind(9, v.MtimeNs).Bind(10, v.Size).Bind(11, v.ContentId).BindPath(12, v.Target).Bind(13, v.Extents).Bind(14, v.Link).Run();
        var id = _db.LastInsertRowId;
        if (_referenced is not null && v.Extents is not null)
        {
            _untracked.Add((v.Extents, v.Size));
        }

        return id;
    }

    /// <summary>
    /// Stores one chunk that is the whole data of a file (deduplicated by SHA-256; to the open group when small,
    /// <see cref="TryGroup"/>); returns its catalog row id.
    /// </summary>
    /// <param name="previous">The extent map of the path's version this content replaces, asked only when the
    /// content is new: a small file's one chunk may then be stored as a delta against it (<see cref="TryDelta"/>).</param>
    public long PutBlob(ReadOnlySpan<byte> data, out BlobId id, Func<byte[]?>? previous = null)
    {
        RefuseAfterAbandon();
        id = BlobId.Of(data);
        return PutBlob(data, id, previous);
    }

    /// <summary>As <see cref="PutBlob(ReadOnlySpan{byte}, out BlobId, Func{byte[]?}?)"/>, for bytes whose id the caller computed.</summary>
    public long PutBlob(ReadOnlySpan<byte> data, BlobId id, Func<byte[]?>? previous = null)
    {
        RefuseAfterAbandon();
        if (Find(id) is { } found)
        {
            NoteFound(data, found);
            return found;
        }

        if (previous is not null && TryDelta(data, id, previous) is { } delta)
        {
            return delta;
        }

        if (TryGroup(data, id) is { } grouped)
        {
            return grouped;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(data.Length));
        try
        {
            var (codec, length) = Encode(data, buffer);
            return Append(id, data.Length, codec, codec == BlobCodec.Raw ? data : buffer.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Deltas stored while recording follow at most this many deltas to their first whole blob or slice.</summary>
    public const int MaxIngestDeltaDepth = 16;

    /// <summary>
    /// The rebuild bound the writer keeps for what it stores as deltas and what it reuses of them (<see cref="RebuildCost"/>;
    /// compaction keeps its own, <c>--rebuild-bound</c>).
    /// </summary>
    public double RebuildBound { get; set; } = RebuildCost.DefaultBound;

    /// <summary>
    /// Stores a new small blob (a chunk of a file of at most 64 KiB) as a zstd delta (codec 2) against the chunks of
    /// the path's previous version, when that was a small file too (docs/store-format.md, "Deltas written while recording"), when
    /// <see cref="GroupsNow"/>, that blob is committed, the delta's rebuild stays within <see cref="RebuildBound"/>
    /// and <see cref="MaxIngestDeltaDepth"/>, and its record is below three quarters of the blob compressed alone (a
    /// group at level 3 stores about that of source text); returns its row id, or null when the caller stores it
    /// as before.
    /// </summary>
    internal long? TryDelta(ReadOnlySpan<byte> data, BlobId id, Func<byte[]?> previous)
    {
        if (!GroupsNow || data.Length > Maintenance.Grouper.MaxMember || data.Length < 64 || _deltaRows.ContainsKey(id) ||
            previous() is not { } map || !ExtentMap.TryDecode(map, long.MaxValue, out var extents) ||
            extents.Count is 0 or > PackFormat.MaxBases || extents.Sum(e => (long)e.Length) > Maintenance.Grouper.MaxMember)
        {
            return null;
        }

        // The bases: the previous version's chunks, a small file's (at most 64 KiB, so one prefix holds them all).
        // Their rebuild costs are added up (a group two of them share counted twice: an upper bound).
        var budget = RebuildCost.Budget(RebuildBound, data.Length) - data.Length;
        var bases = new List<BlobLocation>(extents.Count);
        foreach (var baseRow in extents.Select(e => e.BlobRowId).Distinct())
        {
            if (_bases.Chain(baseRow, _uncommittedRows) is not { } chain || chain.Depth + 1 > MaxIngestDeltaDepth ||
                (budget -= chain.Cost) < 0 || _bases.Location(baseRow) is not { } loc)
            {
                return null;
            }

            bases.Add(loc);
        }

        var prefix = new byte[bases.Sum(b => b.RawLength)];
        var at = 0;
        foreach (var b in bases)
        {
            if (_bases.Read(b) is not { } bytes)
            {
                return null;
            }

            bytes.CopyTo(prefix, at);
            at += bytes.Length;
        }

        var plain = ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(data.Length));
        byte[]? payload;
        try
        {
            var alone = Zstd.Compress(data, plain);
            payload = Codecs.DeltaCodec.Encode(BlobCodec.ZstdDelta, prefix, data, alone / 4 * 3 - PackFormat.RecordSize(0));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(plain);
        }

        if (payload is null)
        {
            return null;
        }

        _sizeLimit?.Check(PackFormat.RecordSize(payload.Length));
        var pack = CurrentPack();
        var offset = pack.Append(id, BlobCodec.ZstdDelta, data.Length, payload, PackFormat.BaseDigest(bases.Select(b => b.Id)));
        StoredBytesWritten += PackFormat.RecordSize(payload.Length);
        Tx();
        _insertDelta.BindBlob(1, id.Bytes).Bind(2, pack.PackId).Bind(3, offset).Bind(4, data.Length).Bind(5, payload.Length)
            .Bind(6, (long)BlobCodec.ZstdDelta).Bind(7, PackFormat.EncodeBases([.. bases.Select(b => b.BlobRowId)])).Run();
        var row = _db.LastInsertRowId;
        _newBlobs[id] = row;
        _uncommittedRows.Add(row);
        DeltasStored++;
        return row;
    }

    /// <summary>Blobs this writer stored as deltas while recording (<see cref="TryDelta"/>).</summary>
    public long DeltasStored { get; private set; }

    /// <summary>
    /// The extent map of the version of <paramref name="pathId"/> the baseline being written inherits
    /// (<see cref="InheritBaseline"/>), when it is a file with content; null otherwise, and outside such a baseline.
    /// </summary>
    public byte[]? InheritedExtents(long pathId)
    {
        if (_inheritingSession == 0 || _inheritedVersion is null)
        {
            return null;
        }

        var r = _inheritedVersion.Bind(1, pathId);
        try
        {
            return r.Step() && r.Int64(1) == (long)EntryKind.File && r.Int64(11) == 0 ? r.BlobOrNull(9) : null;
        }
        finally
        {
            r.Reset();
        }
    }

    /// <summary>
    /// Stores a new blob (one <see cref="Find"/> did not find) as a member of the group the next commit writes, when
    /// <see cref="GroupsSmallBlobs"/>: the last chunk of a file's data (a small file, a growing file's tail: a chain of
    /// tails that begins above 64 KiB would otherwise be one whole record per state), or, with
    /// <paramref name="extendOnly"/>, a chunk that extends the member added just before it; returns its row id, or
    /// null when the caller must store it whole.
    /// </summary>
    public long? TryGroup(ReadOnlySpan<byte> data, BlobId id, bool extendOnly = false)
    {
        if (!GroupsNow || data.Length == 0 || data.Length > PackFormat.MaxRawLength || _deltaRows.ContainsKey(id))
        {
            return null;
        }

        if (_newBlobs.TryGetValue(id, out var known))
        {
            return known; // the same chunk twice in one batch
        }

        RefuseAfterAbandon();
        var extendsLast = _group?.Extends(data) >= 0;
        if (!extendsLast)
        {
            if (extendOnly)
            {
                return null; // a chunk in the middle of a file that does not extend the last member: stored whole
            }

            if (_group is { } full && !full.Fits(data.Length))
            {
                CloseFullGroup();
            }

            if (_group is null)
            {
                _group = new IngestGroup(NewGroupRow(), _spareGroupBuffers.TryPop(out var spare) ? spare : IngestGroup.NewBuffer());
                _uncommittedRows.Add(_group.Row);
            }
        }

        var group = _group!;
        var start = group.Add(data, extendsLast);
        Tx();
        _insertMember.BindBlob(1, id.Bytes).Bind(2, start).Bind(3, data.Length).Bind(4, (long)BlobCodec.Slice)
            .Bind(5, group.Bases).Run();
        var row = _db.LastInsertRowId;
        group.Added(row, id);
        _newBlobs[id] = row;
        _groupedRows.Add(row);
        _uncommittedRows.Add(row);
        return row;
    }

    // Rows this writer stored as slices of its groups (TryGroup): a version that stops naming one leaves compaction
    // nothing to do (its bytes stay in the group), unlike one that stops naming a chunk stored whole.
    private readonly HashSet<long> _groupedRows = [];

    /// <summary>Whether this writer stored <paramref name="row"/> as a slice of a group it wrote (<see cref="TryGroup"/>).</summary>
    public bool StoredInGroup(long row) => _groupedRows.Contains(row);

    /// <summary>
    /// A file's next state was found stored already (<paramref name="row"/>, <paramref name="data"/> its bytes). When it
    /// extends the states of a growing file the open group holds last (tar extracting a second copy of a file: its
    /// final state is the first copy's blob, its intermediate states are new), and it lies in a group, those states
    /// become slices of that group at its start, and their bytes leave the open group: no group keeps bytes only
    /// superseded states name, which compaction would have to re-encode.
    /// </summary>
    public void NoteFound(ReadOnlySpan<byte> data, long row)
    {
        if (_group is not { } group || !group.ChainExtendedBy(data))
        {
            return;
        }

        var where = _blobPlace;
        where.Bind(1, row);
        if (!where.Step())
        {
            return;
        }

        BlobCodec codec;
        long offset;
        long[]? bases;
        try
        {
            (codec, offset) = ((BlobCodec)where.Int32(0), where.Int64(1));
            bases = codec == BlobCodec.Slice && where.BlobOrNull(2) is { } b ? PackFormat.DecodeBases(b) : null;
        }
        finally
        {
            where.Reset();
        }
        var (target, at) = codec switch
        {
            BlobCodec.Group => (row, 0L),
            BlobCodec.Slice when bases is [var g] => (g, offset), // maybe this open group: an earlier member's bytes
            _ => (-1L, 0L), // a whole blob: no slice may name it
        };
        if (target < 0)
        {
            return;
        }

        var move = _moveSlice;
        var encoded = PackFormat.EncodeBases([target]);
        foreach (var member in group.TakeChain())
        {
            move.Bind(1, member).Bind(2, at).Bind(3, encoded).Run();
        }
    }

    /// <summary>
    /// Adds a group's row before its members, so they can name it; its hash is a placeholder (unique, never a blob's)
    /// until the commit writes the record and knows the real one.
    /// </summary>
    private long NewGroupRow()
    {
        Tx();
        _insertBlob.Bind(1, System.Security.Cryptography.RandomNumberGenerator.GetBytes(32)).Bind(2, -1L).Bind(3, 0L)
            .Bind(4, 0L).Bind(5, 0L).Bind(6, (long)BlobCodec.Group).Run();
        return _db.LastInsertRowId;
    }

    /// <summary>
    /// Writes the open group's record and gives its row the real hash and place, after the records of the full groups
    /// the encoder still holds (in the open transaction, before the commit that makes its members visible). A group of
    /// one member is that blob's own bytes: the member is stored whole instead, and the group's row dropped.
    /// </summary>
    private void WriteGroup()
    {
        if (_group is { } group)
        {
            _group = null;
            CloseGroup(group, encodeHere: true);
        }

        WriteEncodedGroups(wait: true);
    }

    /// <summary>
    /// The open group is full (a blob does not fit): it is closed, and hashed and compressed on the encoder's thread
    /// while this one goes on; its record is written when it is done (<see cref="WriteEncodedGroups"/>). The rows and
    /// ids are those writing it here gives: what is in a group is decided here, in the same order.
    /// </summary>
    private void CloseFullGroup()
    {
        var group = _group!;
        _group = null;
        WriteEncodedGroups(wait: false);
        CloseGroup(group, encodeHere: _encoder?.Count >= GroupsInFlight);
    }

    private void CloseGroup(IngestGroup group, bool encodeHere)
    {
        if (group.Members <= 1)
        {
            // Nothing to group (the rows change now, as before); behind any the encoder holds, whose rows stay as they are.
            try
            {
                WriteGroup(group, null);
            }
            finally
            {
                _spareGroupBuffers.Push(group.Buffer); // nothing reads a group's buffer once it is written (or given up)
            }

            return;
        }

        _encoder ??= new GroupEncoder();
        if (encodeHere)
        {
            var encoded = new GroupEncoder.Encoded(group, IngestGroupLevel);
            encoded.Run();
            _encoder.GiveDone(encoded);
        }
        else
        {
            _encoder.Give(group, IngestGroupLevel);
        }
    }

    /// <summary>Writes the records of the groups the encoder finished, oldest first (<paramref name="wait"/>: all of them).</summary>
    private void WriteEncodedGroups(bool wait)
    {
        while (_encoder?.Take(wait) is { } encoded)
        {
            try
            {
                WriteGroup(encoded.Group, encoded);
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(encoded.Payload);
                _spareGroupBuffers.Push(encoded.Group.Buffer);
            }
        }
    }

    /// <summary>A rollback: the groups the encoder holds are given up with their rows (their buffers kept).</summary>
    private void DiscardEncodedGroups()
    {
        if (_encoder is null)
        {
            return;
        }

        foreach (var encoded in _encoder.Discard())
        {
            if (encoded.Done)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(encoded.Payload);
            }

            _spareGroupBuffers.Push(encoded.Group.Buffer);
        }
    }

    /// <param name="encoded">The group's id and compressed bytes when it has more than one member (null: one or none).</param>
    private void WriteGroup(IngestGroup group, GroupEncoder.Encoded? encoded)
    {
        if (group.Members == 0)
        {
            _dropBlob.Bind(1, group.Row).Run(); // all it held went to other groups (NoteFound)
            return;
        }

        var pack = _pack ??= CreatePack(); // not CurrentPack: its roll commits, and this runs inside a commit
        var raw = group.Raw;
        if (group.Members == 1)
        {
            var one = raw[..group.Length];
            var buffer1 = ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(one.Length));
            try
            {
                var (codec, length) = Encode(one, buffer1);
                var payload = codec == BlobCodec.Raw ? one : buffer1.AsSpan(0, length);
                var at = pack.Append(group.FirstId, codec, one.Length, payload);
                StoredBytesWritten += PackFormat.RecordSize(payload.Length);
                _promoteBlob.Bind(1, group.FirstMember).Bind(2, pack.PackId).Bind(3, at).Bind(4, payload.Length).Bind(5, (long)codec).Run();
                _dropBlob.Bind(1, group.Row).Run();
                _groupedRows.Remove(group.FirstMember);
                return;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer1);
            }
        }

        var id = encoded!.Id;
        var again = _newBlobs.ContainsKey(id) || (!_ownsAllBlobs && HashInCatalog(id));
        if (again)
        {
            group.AddTrailer(); // its bytes are a blob's already (blob ids are unique)
            id = BlobId.Of(raw[..group.Length]);
        }

        var buffer = again ? ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(group.Length)) : encoded.Payload;
        try
        {
            var stored = again ? Zstd.Compress(raw[..group.Length], buffer, IngestGroupLevel) : encoded.PayloadLength;
            var offset = pack.Append(id, BlobCodec.Group, group.Length, buffer.AsSpan(0, stored));
            StoredBytesWritten += PackFormat.RecordSize(stored);
            _fillGroup.Bind(1, group.Row).BindBlob(2, id.Bytes).Bind(3, pack.PackId).Bind(4, offset).Bind(5, (long)group.Length).Bind(6, (long)stored).Run();
            _newBlobs[id] = group.Row;
        }
        finally
        {
            if (again)
            {
                ArrayPool<byte>.Shared.Return(buffer); // the encoder's payload is the caller's to return
            }
        }
    }

    /// <summary>
    /// Stores a new 64 KiB block (one <see cref="Find"/> did not find) as a member of the aligned group the next commit
    /// (or the group's filling up) writes: its bytes then lie uncompressed at a 4 KiB-aligned offset of the pack
    /// (docs/store-format.md, "Aligned groups"). Returns its row id, or null when the caller must store it whole.
    /// </summary>
    public long? TryAlignedGroup(ReadOnlySpan<byte> data, BlobId id)
    {
        if (!AlignsNow || data.Length != AlignedGroup.Member || _deltaRows.ContainsKey(id))
        {
            return null;
        }

        if (_newBlobs.TryGetValue(id, out var known))
        {
            return known;
        }

        RefuseAfterAbandon();
        if (_aligned is null)
        {
            _aligned = new AlignedGroup(NewGroupRow(), _spareAlignedBuffer ?? AlignedGroup.NewBuffer());
            _uncommittedRows.Add(_aligned.Row);
            _spareAlignedBuffer = null;
        }

        var group = _aligned;
        Tx();
        // The offset before the leading padding, which is known only when the record's place is (WriteAlignedGroup).
        _insertMember.Bind(1, id.ToArray()).Bind(2, AlignedGroup.MemberOffset(group.Members, 0)).Bind(3, data.Length).Bind(4, (long)BlobCodec.Slice)
            .Bind(5, PackFormat.EncodeBases([group.Row])).Run();
        var row = _db.LastInsertRowId;
        group.Add(data, row);
        _newBlobs[id] = row;
        _groupedRows.Add(row);
        _uncommittedRows.Add(row);
        if (group.Full)
        {
            WriteAlignedGroup();
        }

        return row;
    }

    /// <summary>
    /// Writes the open aligned group's record where its members' bytes land on 4 KiB boundaries of the pack, moves its
    /// members' offsets past the leading padding and gives its row the real hash and place (in the open transaction,
    /// before the commit that makes them visible).
    /// </summary>
    private void WriteAlignedGroup()
    {
        if (_aligned is not { } group)
        {
            return;
        }

        _aligned = null;
        try
        {
            var pack = _pack ??= CreatePack(); // not CurrentPack: its roll commits, and this may run inside a commit
            var (start, stored, raw, id, lead) = group.Layout(pack.Length, trailer: false);
            if (_newBlobs.ContainsKey(id) || (!_ownsAllBlobs && HashInCatalog(id)))
            {
                (start, stored, raw, id, lead) = group.Layout(pack.Length, trailer: true); // its bytes are a blob's already
            }

            var offset = pack.Append(id, BlobCodec.Group, raw, group.Buffer.AsSpan(start, stored));
            StoredBytesWritten += PackFormat.RecordSize(stored);
            _fillGroup.Bind(1, group.Row).Bind(2, id.ToArray()).Bind(3, pack.PackId).Bind(4, offset).Bind(5, (long)raw).Bind(6, (long)stored).Run();
            _newBlobs[id] = group.Row;
            if (lead > 0)
            {
                foreach (var member in group.Rows)
                {
                    _shiftMember.Bind(1, member).Bind(2, (long)lead).Run();
                }
            }
        }
        finally
        {
            _spareAlignedBuffer = group.Buffer;
        }
    }

    /// <summary>
    /// zstd level of a group written while recording: 3 compresses tar's headers 14% smaller than level 1 at 80%
    /// of its speed (190 against 233 MB/s here), where level 6 is 11% smaller again at a third of the speed
    /// (docs/benchmarks.md); the recorder's thread pays it.
    /// </summary>
    public const int IngestGroupLevel = 3;

    /// <summary>
    /// Whether a delta found again may be named as it is (docs/store-format.md, "Deltas written while recording"):
    /// one written while recording (its bases are older rows than itself: compaction's deltas are old rows re-encoded
    /// against newer content), of a small blob, whose chain stays within <see cref="MaxIngestDeltaDepth"/> and
    /// <see cref="RebuildBound"/>, while the writer stores deltas (<see cref="GroupsNow"/>). Otherwise it is stored
    /// whole again, as before: a path's newest content never follows a chain compaction made.
    /// </summary>
    private bool DeltaWithinBound(long row)
    {
        if (!GroupsNow || _bases.Location(row) is not { RawLength: <= Maintenance.Grouper.MaxMember } loc || loc.Bases.Any(b => b >= row))
        {
            return false;
        }

        return _bases.Chain(row, _uncommittedRows) is { } chain && chain.Depth <= MaxIngestDeltaDepth &&
            chain.Cost <= RebuildCost.Budget(RebuildBound, loc.RawLength);
    }

    private bool HashInCatalog(BlobId id)
    {
        var find = _findBlob.BindBlob(1, id.Bytes);
        try
        {
            return find.Step();
        }
        finally
        {
            find.Reset();
        }
    }

    /// <summary>The row id of a blob already in the trace, or null.</summary>
    public long? Find(BlobId id)
    {
        if (_newBlobs.TryGetValue(id, out var rowId))
        {
            return rowId;
        }

        if (_ownsAllBlobs)
        {
            return null;
        }

        Tx();
        var find = _findBlob.BindBlob(1, id.Bytes);
        try
        {
            if (!find.Step())
            {
                return null;
            }

            var row = find.Int64(0);
            if ((BlobCodec)find.Int32(1) is BlobCodec.ZstdDelta or BlobCodec.BsDiff && !DeltaWithinBound(row))
            {
                _deltaRows[id] = row;
                return null;
            }

            _newBlobs[id] = row;
            return row;
        }
        finally
        {
            find.Reset();
        }
    }

    /// <summary>
    /// Encodes a chunk for storage into <paramref name="buffer"/> (at least <see cref="Zstd.CompressBound"/> long):
    /// zstd when that is smaller, raw otherwise (then the buffer is unused). Thread-safe: callers may encode
    /// chunks in parallel and <see cref="Append"/> them in order.
    /// </summary>
    public static (BlobCodec Codec, int Length) Encode(ReadOnlySpan<byte> data, byte[] buffer)
    {
        if (data.Length > PackFormat.MaxRawLength)
        {
            throw new ArgumentOutOfRangeException(nameof(data), "a blob is at most 256 KiB");
        }

        if (data.Length >= 64)
        {
            var n = Zstd.Compress(data, buffer);
            if (n < data.Length)
            {
                return (BlobCodec.Zstd, n);
            }
        }

        return (BlobCodec.Raw, data.Length);
    }

    /// <summary>Appends an encoded chunk that <see cref="Find"/> did not find; returns its row id.</summary>
    public long Append(BlobId id, int rawLength, BlobCodec codec, ReadOnlySpan<byte> payload)
    {
        if (_newBlobs.TryGetValue(id, out var known))
        {
            return known; // the same chunk twice in one batch
        }

        _sizeLimit?.Check(PackFormat.RecordSize(payload.Length));
        var pack = CurrentPack();
        var offset = pack.Append(id, codec, rawLength, payload);
        StoredBytesWritten += PackFormat.RecordSize(payload.Length);
        Tx();
        if (_deltaRows.Remove(id, out var deltaRow))
        {
            _promoteBlob.Bind(1, deltaRow).Bind(2, pack.PackId).Bind(3, offset).Bind(4, payload.Length).Bind(5, (long)codec).Run();
            _newBlobs[id] = deltaRow;
            _uncommittedRows.Add(deltaRow);
            return deltaRow;
        }

        _insertBlob.BindBlob(1, id.Bytes).Bind(2, pack.PackId).Bind(3, offset).Bind(4, rawLength).Bind(5, payload.Length).Bind(6, (long)codec).Run();
        var rowId = _db.LastInsertRowId;
        _newBlobs[id] = rowId;
        _uncommittedRows.Add(rowId);
        return rowId;
    }

    /// <summary>
    /// Keep mode: from now on <see cref="Commit"/> writes the pack's buffered records but does not fsync, so a commit
    /// is durable against a crash of any process at once (the bytes are in the page cache) and costs no disk
    /// flush; <see cref="SyncToDisk"/>, called from another thread, makes it durable against power loss. New pack
    /// directories are fsynced when created.
    /// </summary>
    public void DeferSyncToCaller()
    {
        Commit();
        _deferSync = true;
    }

    /// <summary>
    /// fsyncs every pack written since the last call and the catalog (its WAL and database file). Thread-safe, and
    /// meant to run beside the writer's thread (keep mode, <see cref="DeferSyncToCaller"/>): it syncs at least what
    /// was committed before it was called. False when a file that exists could not be synced (EIO, no descriptor
    /// left): what was committed may not be durable, so a caller about to delete the pack files those commits
    /// stopped naming keeps them (a missing <c>-wal</c> is no failure: nothing is in it).
    /// </summary>
    public bool SyncToDisk()
    {
        List<string> packs;
        lock (_unsynced)
        {
            packs = [.. _unsynced];
            _unsynced.Clear();
        }

        var ok = true;
        foreach (var path in packs.Append(Path.Combine(TraceDir, "catalog.db-wal")).Append(Path.Combine(TraceDir, "catalog.db")))
        {
            if (!Native.Interop.Libc.FsyncPath(path) && File.Exists(path))
            {
                ok = false;
            }
        }

        return ok;
    }

    /// <summary>Whether anything was added since the last commit.</summary>
    public bool HasPending => _inTransaction;

    /// <summary>
    /// Called on the writer's thread at the start of every <see cref="Commit"/> (also the one a full pack makes),
    /// before anything is written: a caller that holds rows back (the recorder's events waiting for their file's
    /// read) adds them here, so no commit shows a later event without an earlier one.
    /// </summary>
    public Action? BeforeCommit { get; set; }

    /// <summary>
    /// Starts making the records appended so far durable (the pack's buffer written, its fsync on another thread), so
    /// the caller's last catalog rows are prepared while the disk works; the next <see cref="Commit"/> waits for that
    /// fsync (and fsyncs again only if records were appended since) before the catalog commits, as ever. Not with
    /// <see cref="DeferSyncToCaller"/>.
    /// </summary>
    public void StartSync()
    {
        WriteGroup(); // the group's record goes into the pack now, so the commit finds nothing left to sync
        WriteAlignedGroup();
        if (_pack is not null && !_deferSync)
        {
            AwaitPackSync();
            _packSync = _pack.StartSync();
        }
    }

    private Task? _packSync;

    /// <summary>Waits for the fsync <see cref="StartSync"/> began, if any, and throws its failure.</summary>
    private void AwaitPackSync()
    {
        var pending = _packSync;
        _packSync = null;
        pending?.GetAwaiter().GetResult();
    }

    /// <summary>Makes everything added so far durable and visible: fsync the pack, then commit the catalog.</summary>
    public void Commit()
    {
        BeforeCommit?.Invoke();
        FlushRun();
        WriteGroup();
        WriteAlignedGroup();
        if (!_inTransaction)
        {
            return;
        }

        if (_pack is not null)
        {
            if (_deferSync)
            {
                _pack.Flush();
                lock (_unsynced)
                {
                    _unsynced.Add(Path.Combine(TraceDir, PackFormat.RelativePath(_pack.PackId)));
                }
            }
            else
            {
                AwaitPackSync();
                _pack.Sync(); // nothing to do when StartSync's fsync covered every record
            }

            _commitPack.Bind(1, _pack.PackId).Bind(2, _pack.Length).Run();
        }

        try
        {
            _db.Execute("COMMIT");
        }
        catch (CatalogException) when (!_db.InTransaction)
        {
            _inTransaction = false; // SQLite rolled it back: what it held is not stored, as the exception says
            throw;
        }

        _inTransaction = false;
        _uncommittedVersionsFrom = long.MaxValue;
        _uncommittedRows.Clear();
    }

    private PackWriter CurrentPack()
    {
        if (_pack is not null && _pack.Length >= PackFormat.RollSize)
        {
            Commit();
            _pack.Dispose();
            _pack = null;
        }

        return _pack ??= CreatePack();
    }

    /// <summary>
    /// Creates a new, empty pack with the next pack number and fsyncs the directories that name it. Thread-safe:
    /// a maintenance pass running beside the writer's thread appends to a pack of its own. The pack is garbage (the
    /// next writer deletes the file) until a commit records its <c>committed_size</c>.
    /// </summary>
    public PackWriter CreatePack()
    {
        var pack = PackWriter.Create(TraceDir, Interlocked.Increment(ref _nextPackId) - 1);
        pack.WritesLargeRecordsDirect = WritesLargeRecordsDirect;
        // The pack's name must survive a power loss with the commits that will reference it (and garbage
        // collection deletes old packs right after such commits): once per pack, off the recorded program's path.
        Native.Interop.Libc.FsyncPath(Path.GetDirectoryName(Path.Combine(TraceDir, PackFormat.RelativePath(pack.PackId)))!, directory: true);
        Native.Interop.Libc.FsyncPath(Path.Combine(TraceDir, "packs"), directory: true);
        return pack;
    }

    /// <summary>
    /// Opens pack <paramref name="packId"/> to append after its <paramref name="committedSize"/> bytes
    /// (<see cref="PackWriter.OpenAtEnd"/>), or null when the file is not exactly that long. Thread-safe as
    /// <see cref="CreatePack"/>. Maintenance continues in an earlier pass's pack of deltas instead of starting a pack
    /// every pass; it never passes the pack this writer appends to, nor one numbered from the pass's start on.
    /// </summary>
    public PackWriter? ContinuePack(long packId, long committedSize)
    {
        var pack = PackWriter.OpenAtEnd(TraceDir, packId, committedSize);
        if (pack is not null)
        {
            pack.WritesLargeRecordsDirect = WritesLargeRecordsDirect;
        }

        return pack;
    }

    private void Tx()
    {
        if (_inTransaction && !_db.InTransaction)
        {
            // A failed write made SQLite roll the transaction back: going on would commit each row on its own, a
            // later change without the earlier ones it was added with.
            _inTransaction = false;
            throw new CatalogException(10, "the catalog transaction was rolled back after a failed write; its changes are not stored");
        }

        if (!_inTransaction)
        {
            _db.Execute("BEGIN IMMEDIATE");
            _inTransaction = true;
        }
    }

    public void Dispose()
    {
        try
        {
            Commit();
        }
        finally
        {
            Close();
        }
    }

    private void Close()
    {
        _encoder?.Dispose();
        try
        {
            _packSync?.Wait(); // a StartSync no commit waited for (Commit takes and awaits it): its outcome no longer matters
        }
        catch (AggregateException)
        {
        }

        _insertEvent.Dispose();
        _insertVersion.Dispose();
        _insertPath.Dispose();
        _findPath?.Dispose();
        _inheritedVersion?.Dispose();
        _findBlob.Dispose();
        _promoteBlob.Dispose();
        _insertBlob.Dispose();
        _commitPack.Dispose();
        _insertMember.Dispose();
        _fillGroup.Dispose();
        _dropBlob.Dispose();
        _shiftMember.Dispose();
        _blobPlace.Dispose();
        _moveSlice.Dispose();
        _insertDelta.Dispose();
        _bases.Dispose();
        _pack?.Dispose();
        try
        {
            CloseCatalog();
            DeleteFilesAfterClose();
            RemoveEmptyPackDirectories();
        }
        finally
        {
            lock (OpenHere)
            {
                OpenHere.Remove(TraceDir);
            }

            _lock.Dispose();
        }
    }
}
