using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// Read access to a trace, without the writer's lock: sees the catalog as of the last commit, even while a
/// recording is running (SQLite WAL snapshot per query). Every path it returns has passed <see cref="TracePath.Validate"/>.
/// Not thread-safe; <see cref="Packs"/> is.
/// </summary>
public sealed class TraceReader : IDisposable
{
    private readonly SqliteDatabase _db;
    private readonly SqliteStatement _blobById;
    private readonly ReaderLock? _readerLock; // null: the connection is a writer's (see Over), which owns it

    // Formats 1 and 2 lack columns: read them as format 3 with their defaults (a reader never migrates).
    private readonly string _basesColumn;
    private readonly string _prunedColumn;
    private readonly string _linkColumn;
    private readonly string _versionBroken;
    private readonly int _format;
    private readonly string _blobBroken;

    private TraceReader(string traceDir, SqliteDatabase db, ReaderLock? readerLock)
    {
        TraceDir = traceDir;
        _db = db;
        _readerLock = readerLock;
        var format = _format = CatalogSchema.Version(db);
        var format1 = format < 2;
        _basesColumn = format1 ? "NULL" : "bases";
        _prunedColumn = format1 ? "0" : "v.pruned";
        _linkColumn = format < 3 ? "NULL" : "v.link"; // format 2 had no hard links
        _versionBroken = CatalogDomain.Broken("versions", "v.", format);
        _blobBroken = CatalogDomain.Broken("blobs", "", format);
        Packs = new PackReader(traceDir);
        _blobById = db.Prepare($"SELECT hash, pack_id, offset, raw_len, stored_len, codec, {_basesColumn}, {_blobBroken} FROM blobs WHERE id = ?1");
        Blobs = new BlobReader(Blob, Packs);
    }

    public string TraceDir { get; }

    public PackReader Packs { get; }

    /// <summary>Decodes blobs by row, delta chains included.</summary>
    public BlobReader Blobs { get; }

    /// <summary>Where warnings about a trace go (the CLI prints them on stderr); null drops them.</summary>
    public static Action<string>? Warning { get; set; }

    public static TraceReader Open(string traceDir) => Open(traceDir, tidy: false);

    /// <summary>
    /// <see cref="Open(string)"/>; with <paramref name="tidy"/>, for a process that opens no writer of this trace while
    /// the reader is open (materialize), the catalog is read on a connection that may write but runs no statement that
    /// writes (<c>query_only</c>), so that its own close, as the last connection, removes the <c>-wal</c> and <c>-shm</c>
    /// a read-only one leaves: <see cref="Dispose"/> then opens no second connection for them (~90 system calls and
    /// SQLite's open of the file again; docs/benchmarks.md, "mat17"). Another process's connection, reader or writer,
    /// keeps them, as before.
    /// </summary>
    public static TraceReader Open(string traceDir, bool tidy)
    {
        traceDir = Path.GetFullPath(traceDir);
        var catalogPath = Path.Combine(traceDir, "catalog.db");
        CheckExists(traceDir);
        TraceFile.CheckSidecars(traceDir);

        // The lock before the catalog: a writer closing renames a rewritten catalog over catalog.db only while it holds
        // LOCK.readers exclusively (TraceWriter.CloseCatalog). A reader that opened the file first would keep the
        // replaced one, and its first read would make a -wal and -shm that then belong to the new file.
        var readerLock = ReaderLock.Acquire(traceDir);
        SqliteDatabase? db = null;
        try
        {
            try
            {
                db = tidy && !TraceWriter.IsOpenInThisProcess(traceDir)
                    ? SqliteDatabase.OpenToReadAndTidy(catalogPath)
                    : SqliteDatabase.Open(catalogPath, readOnly: true);
            }
            catch (CatalogException e)
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"cannot open the catalog {catalogPath}: {e.Message}", e);
            }

            if (TraceFile.OthersMayWrite(traceDir) is { } warning)
            {
                Warning?.Invoke(warning);
            }

            CatalogSchema.Check(db, catalogPath);
            return new TraceReader(traceDir, db, readerLock);
        }
        catch
        {
            db?.Dispose();
            readerLock.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A reader on <paramref name="writer"/>'s own connection, for a command that reads what it is about to write after
    /// (snapshot reads its parent): it sees the writer's uncommitted rows, takes no reader lock (the writer's lock
    /// already keeps every other writer out, and this process deletes no pack while it reads) and opens no second
    /// connection (a second SQLite open, format check and its close were ~5 ms of a snapshot). Disposing it leaves
    /// the connection to the writer; use it only on the writer's thread, before the writer is disposed.
    /// </summary>
    public static TraceReader Over(TraceWriter writer) => new(writer.TraceDir, writer.Database, null);

    /// <summary>
    /// Throws exit 3 when there is no trace at <paramref name="traceDir"/> (an absolute path), exit 10 when this user
    /// may not read it. File.Exists says "no" for a catalog it may not read, and SQLite says only "unable to open
    /// database file": opening the catalog once tells the two apart.
    /// </summary>
    public static void CheckExists(string traceDir)
    {
        var catalogPath = Path.Combine(traceDir, "catalog.db");
        try
        {
            using var probe = TraceFile.OpenRegular(catalogPath); // a FIFO there must not block the open
        }
        catch (FileNotFoundException e) // ENOENT, or ENOTDIR: --trace is a file
        {
            throw new DiffKeeperException(ExitCode.NoTrace,
                $"no trace at {traceDir} (no catalog.db there); record one with 'diffkeeper record', or pass --trace DIR or set DIFFKEEPER_TRACE", e);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "read the trace at", traceDir);
        }
    }

    /// <summary>Whether the connection is inside a transaction (a <see cref="Snapshot"/>, or its writer's: <see cref="Over"/>).</summary>
    public bool InTransaction => _db.InTransaction;

    /// <summary>
    /// Holds one read transaction until disposed, so several queries see the same committed state even while a
    /// recording commits (verify and stats read blobs, then versions: without it a version could name a blob
    /// committed after the blob list was read).
    /// </summary>
    /// <param name="rememberBlobs">Keep the blob rows read under it (see <c>_snapshotBlobs</c>): for an export or a
    /// restore, which look a delta's bases up twice; not for passes that read every row once (compaction, sweep).</param>
    public IDisposable Snapshot(bool rememberBlobs = false)
    {
        _db.Execute("BEGIN");
        _db.Execute("SELECT count(*) FROM meta"); // a deferred transaction takes its snapshot at the first read
        _snapshotBlobs = rememberBlobs ? [] : null;
        return new SnapshotScope(this);
    }

    private sealed class SnapshotScope(TraceReader reader) : IDisposable
    {
        public void Dispose()
        {
            reader._snapshotBlobs = null;
            reader._db.Execute("COMMIT");
        }
    }

    // Blob rows read while a snapshot that asked for it is held: no row changes under it, and an export looks a
    // delta's bases up twice (to order its files by group, then to decode). Bounded: past MaxSnapshotBlobs rows are
    // read again.
    private Dictionary<long, BlobLocation>? _snapshotBlobs;
    private const int MaxSnapshotBlobs = 1 << 20;

    public IReadOnlyList<SessionInfo> Sessions() => ReadSessions(null);

    /// <summary>
    /// Session <paramref name="id"/> read by its key: its own row, roots and notes, and the rows of the sessions its
    /// baseline inherits from, each checked against its domain as <see cref="Sessions"/> checks every row; not the whole
    /// table (and the EXIT event of every session), whose reading grows with the store. Null when there is none.
    /// For a command bound to one session (materialize).
    /// </summary>
    public SessionInfo? SessionByKey(long id) => ReadSessions(id) is [var s] ? s : null;

    /// <summary>Every session, or (<paramref name="only"/>) that one alone, as <see cref="Sessions"/> describes them.</summary>
    private List<SessionInfo> ReadSessions(long? only)
    {
        var roots = new Dictionary<long, List<RootInfo>>();
        using (var r = _db.Prepare($"SELECT r.id, r.session_id, r.path, {CatalogDomain.Broken("roots", "r.", _format)}, {(_format >= 5 ? "coalesce(r.paths_root, r.id)" : "r.id")} FROM roots r " +
            (only is null ? "" : "WHERE r.session_id = ?1 ") + "ORDER BY r.id"))
        {
            if (only is { } bound)
            {
                r.Bind(1, bound);
            }

            while (r.Step())
            {
                Check(r, 3, "roots", 0);
                var sid = r.Int64(1);
                if (!roots.TryGetValue(sid, out var list))
                {
                    roots[sid] = list = [];
                }

                list.Add(new RootInfo(r.Int64(0), r.Path(2)) { PathsRoot = r.Int64(4) });
            }
        }

        var notKept = SessionNotes(Maintenance.SessionContents.NotKeptKeyPrefix);
        var dropped = SessionNotes(Maintenance.PrunePolicy.SizeLimitKeyPrefix);

        var sessions = new List<SessionInfo>();
        // The EXIT event's detail says "killed by SIGNAME" for a death by signal, where exit_code holds the shell's 128+N.
        var baselineFrom = new Dictionary<long, long>();
        using (var r = _db.Prepare($"SELECT id, command, cwd, capture, started_wall_ns, ended_ns, exit_code, lost_events, state, {CatalogDomain.Broken("sessions", "", _format)}, " +
            $"(SELECT detail FROM events e WHERE e.session_id = sessions.id AND e.op = {(int)ChangeOp.Exit} ORDER BY e.seq DESC LIMIT 1), " +
            $"{(_format >= 5 ? "baseline_from" : "NULL")} FROM sessions " + (only is null ? "" : "WHERE id = ?1 ") + "ORDER BY id"))
        {
            if (only is { } bound)
            {
                r.Bind(1, bound);
            }

            while (r.Step())
            {
                Check(r, 9, "sessions", 0);
                var id = r.Int64(0);
                sessions.Add(new SessionInfo(id, r.String(1), r.String(2), r.String(3), r.Int64(4),
                    r.Int64OrNull(5), r.IsNull(6) ? null : r.Int32(6), r.Int64(7),
                    r.String(8), roots.TryGetValue(id, out var list) ? list : [])
                {
                    ContentsNotKept = notKept.GetValueOrDefault(id),
                    ContentsDroppedBySizeLimit = dropped.GetValueOrDefault(id),
                    KilledBy = !r.IsNull(10) && r.String(10) is { } exit && exit.StartsWith("killed by ", StringComparison.Ordinal) ? exit : null,
                });
                if (r.Int64OrNull(11) is { } from)
                {
                    baselineFrom[id] = from;
                }
            }
        }

        // A session's baseline_from: from the rows read, or (one session read by key) from the row of a session its
        // chain passes through, checked as every row read is. Null when it has none or there is no such row.
        long? BaselineFrom(long at)
        {
            if (baselineFrom.TryGetValue(at, out var from))
            {
                return from;
            }

            if (only is null || at == only)
            {
                return null;
            }

            using var q = _db.Prepare($"SELECT baseline_from, {CatalogDomain.Broken("sessions", "", _format)} FROM sessions WHERE id = ?1");
            q.Bind(1, at);
            if (!q.Step())
            {
                return null;
            }

            Check(q, 1, "sessions", 0);
            return q.Int64OrNull(0);
        }

        // Each session's inherited state: the sessions whose end it starts from, nearest first (the domain rule keeps
        // every step to an earlier session, so the walk ends; a chain longer than a writer makes is damage).
        for (var i = 0; i < sessions.Count; i++)
        {
            var chain = new List<long>();
            for (var at = sessions[i].Id; BaselineFrom(at) is { } from && from < at; at = from)
            {
                if (chain.Count == TraceWriter.MaxBaselineChain)
                {
                    throw CatalogDomain.Throw("sessions", sessions[i].Id.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        $"its baseline inherits through more than {TraceWriter.MaxBaselineChain} sessions");
                }

                chain.Add(from);
            }

            if (chain.Count > 0)
            {
                sessions[i] = sessions[i] with { BaselineChain = chain };
            }
        }

        return sessions;
    }

    /// <summary>The meta rows PREFIX + session id, by session id (rows whose key does not end in a number are ignored).</summary>
    private Dictionary<long, string> SessionNotes(string prefix)
    {
        var notes = new Dictionary<long, string>();
        using var r = _db.Prepare($"SELECT key, value FROM meta WHERE substr(key, 1, {prefix.Length}) = '{prefix}'");
        while (r.Step())
        {
            if (long.TryParse(r.String(0).AsSpan(prefix.Length), System.Globalization.NumberStyles.None,
                    System.Globalization.CultureInfo.InvariantCulture, out var sid))
            {
                notes[sid] = r.String(1);
            }
        }

        return notes;
    }

    /// <summary>The session with <paramref name="id"/>, or the latest one when null.</summary>
    public SessionInfo Session(long? id)
    {
        var sessions = Sessions();
        if (sessions.Count == 0)
        {
            throw new DiffKeeperException(ExitCode.NotFound, $"the trace {TraceDir} holds no session yet");
        }

        if (id is null)
        {
            return sessions[^1];
        }

        return sessions.FirstOrDefault(s => s.Id == id)
            ?? throw new DiffKeeperException(ExitCode.NotFound,
                $"the trace has no session {id}; it has sessions {sessions[0].Id} to {sessions[^1].Id} ('diffkeeper sessions' lists them)");
    }

    /// <summary>How a path of a session is shown: root-relative with one root, absolute with several.</summary>
    public static string DisplayPath(SessionInfo session, long rootId, string rel)
    {
        if (session.Roots.Count <= 1)
        {
            return rel;
        }

        var root = session.Roots.FirstOrDefault(r => r.Id == rootId)?.Path
            ?? throw new DiffKeeperException(ExitCode.Corrupt,
                $"the catalog is damaged: a path of session {session.Id} lies in root {rootId}, which belongs to no root of that session; 'diffkeeper verify' lists every damaged row");
        return root.EndsWith('/') ? root + rel : root + "/" + rel;
    }

    /// <summary>
    /// The events of a session from <paramref name="fromSeq"/> to <paramref name="toSeq"/>, in seq order, write runs
    /// (format 7) expanded into their events: what a trace with one row per event would give.
    /// </summary>
    public IEnumerable<EventRecord> Events(SessionInfo session, long fromSeq = 0, long toSeq = long.MaxValue)
    {
        using var r = _db.Prepare($"""
            SELECT e.seq, e.time_ns, e.op, {RootOf("p1", "e")}, p1.rel, {RootOf("p2", "e")}, p2.rel, e.size, e.pid, e.comm, e.detail,
                   {CatalogDomain.Broken("events", "e.", _format)}, {(_format >= 4 ? "e.offset, e.length" : "NULL, NULL")}, {RunColumn("e.")}
            FROM events e LEFT JOIN paths p1 ON p1.id = e.path_id LEFT JOIN paths p2 ON p2.id = e.path2_id
            WHERE e.session_id = ?1 AND e.seq >= ?2 AND e.seq <= ?3 ORDER BY e.seq
            """);
        // A run that holds fromSeq starts at most MaxFollowers before it.
        r.Bind(1, session.Id).Bind(2, Math.Max(fromSeq, long.MinValue + EventRun.MaxFollowers) - EventRun.MaxFollowers).Bind(3, toSeq);
        var steps = new List<RunStep>();
        var covered = long.MinValue; // the last seq of the rows read so far
        while (r.Step())
        {
            if (!r.IsNull(11))
            {
                throw CatalogDomain.Throw("events", $"{session.Id}/{r.StringOrNull(0)}", r.String(11));
            }

            var seq = r.Int64(0);
            var run = r.BlobOrNull(14);
            if (seq <= covered)
            {
                r.Reset();
                throw CatalogDomain.Throw("events", $"{session.Id}/{seq}", "it lies inside the write run of an earlier row");
            }

            var e = new EventRecord(session.Id, seq, r.Int64(1), (ChangeOp)r.Int32(2), null, null,
                r.Int64OrNull(7), r.IsNull(8) ? null : r.Int32(8), r.StringOrNull(9), r.StringOrNull(10),
                r.Int64OrNull(12), r.Int64OrNull(13));
            steps.Clear();
            if (run is not null && !EventRun.TryDecode(run, new RunStep(seq, e.TimeNs, e.Offset, e.Length, e.Size), steps, out var error))
            {
                r.Reset();
                throw CatalogDomain.Throw("events", $"{session.Id}/{seq}", error!);
            }

            covered = seq + steps.Count;
            if (covered < fromSeq)
            {
                continue;
            }

            string? p1 = r.IsNull(4) ? null : DisplayPath(session, r.Int64(3), TracePath.Validate(r.Path(4)));
            string? p2 = r.IsNull(6) ? null : DisplayPath(session, r.Int64(5), TracePath.Validate(r.Path(6)));
            e = e with { Path = p1, Path2 = p2 };
            if (seq >= fromSeq)
            {
                yield return e;
            }

            foreach (var step in steps)
            {
                if (step.Seq >= fromSeq && step.Seq <= toSeq)
                {
                    yield return e with { Seq = step.Seq, TimeNs = step.TimeNs, Offset = step.Offset, Length = step.Length, Size = step.Size };
                }
            }
        }
    }

    /// <summary>The <c>events.run</c> column (format 7; NULL before it: every row is one event).</summary>
    private string RunColumn(string prefix) => _format >= 7 ? prefix + "run" : "NULL";

    public long MaxSeq(SessionInfo session)
    {
        // Text and blobs sort after every number, so a non-integer seq in the session is the greatest one. A run
        // (format 7) ends its count of events after the row's seq; the count is the run's first varint.
        using var r = _db.Prepare($"SELECT seq, typeof(seq) = 'integer', substr({RunColumn("")}, 1, 3), {CatalogDomain.Broken("events", "", _format)} FROM events WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1");
        r.Bind(1, session.Id);
        if (!r.Step())
        {
            return 0;
        }

        var seq = r.Int64(0);
        if (r.Int64(1) == 0 || seq < 1)
        {
            var shown = r.StringOrNull(0);
            r.Reset();
            throw CatalogDomain.Throw("events", $"{session.Id}/{shown}", "seq is not an integer >= 1");
        }

        Check(r, 3, "events", session.Id, seq);
        var run = r.BlobOrNull(2);
        r.Reset();
        if (run is null)
        {
            return seq;
        }

        return EventRun.Followers(run) is { } n && seq <= long.MaxValue - n ? seq + n
            : throw CatalogDomain.Throw("events", $"{session.Id}/{seq}", $"its write run does not start with a count 1 to {EventRun.MaxFollowers}");
    }

    /// <summary>The last event at or before <paramref name="timeNs"/> since start (0: only the baseline).</summary>
    public long SeqAtTime(SessionInfo session, long timeNs)
    {
        // A run's times do not decrease, so the answer lies in the last row whose own time is at or before timeNs.
        using var r = _db.Prepare($"""
            SELECT seq, time_ns, {(_format >= 4 ? "offset, length" : "NULL, NULL")}, size, {RunColumn("")}, {CatalogDomain.Broken("events", "", _format)}
            FROM events WHERE session_id = ?1 AND time_ns <= ?2 ORDER BY seq DESC LIMIT 1
            """);
        if (!r.Bind(1, session.Id).Bind(2, timeNs).Step())
        {
            return 0;
        }

        if (!r.IsNull(6))
        {
            var shown = r.StringOrNull(0);
            var broken = r.String(6);
            r.Reset();
            throw CatalogDomain.Throw("events", $"{session.Id}/{shown}", broken);
        }

        var head = new RunStep(r.Int64(0), r.Int64(1), r.Int64OrNull(2), r.Int64OrNull(3), r.Int64OrNull(4));
        var run = r.BlobOrNull(5);
        r.Reset();
        if (run is null)
        {
            return head.Seq;
        }

        var steps = new List<RunStep>();
        if (!EventRun.TryDecode(run, head, steps, out var error))
        {
            throw CatalogDomain.Throw("events", $"{session.Id}/{head.Seq}", error!);
        }

        var at = head.Seq;
        foreach (var step in steps)
        {
            if (step.TimeNs > timeNs)
            {
                break;
            }

            at = step.Seq;
        }

        return at;
    }

    /// <summary>
    /// Write runs (format 7) that do not decode, or that reach into the row after them, for verify: one line each, at
    /// most <paramref name="perTable"/> named. Rows outside their column's domain are left to <see cref="DomainProblems"/>.
    /// </summary>
    public List<string> EventRunProblems(int perTable = 5)
    {
        var problems = new List<string>();
        if (_format < 7)
        {
            return problems;
        }

        using var r = _db.Prepare($"""
            SELECT session_id, seq, time_ns, offset, length, size, run FROM events e
            WHERE {CatalogDomain.Broken("events", "e.", _format)} IS NULL ORDER BY session_id, seq
            """);
        var steps = new List<RunStep>();
        var count = 0;
        long session = 0, covered = long.MinValue;
        while (r.Step())
        {
            var (sid, seq) = (r.Int64(0), r.Int64(1));
            if (sid != session)
            {
                (session, covered) = (sid, long.MinValue);
            }

            string? error = seq <= covered ? "it lies inside the write run of an earlier row" : null;
            steps.Clear();
            if (r.BlobOrNull(6) is { } run && error is null &&
                !EventRun.TryDecode(run, new RunStep(seq, r.Int64(2), r.Int64OrNull(3), r.Int64OrNull(4), r.Int64OrNull(5)), steps, out error))
            {
                steps.Clear();
            }

            covered = Math.Max(covered, seq + steps.Count);
            if (error is not null && ++count <= perTable)
            {
                problems.Add($"catalog: events row {sid}/{seq}: {error}");
            }
        }

        if (count > perTable)
        {
            problems.Add(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"catalog: events: {count - perTable} more rows whose write run is damaged"));
        }

        return problems;
    }

    /// <summary>The event number a moment names, for this session.</summary>
    public long Resolve(SessionInfo session, TimeSpec at)
    {
        var max = MaxSeq(session);
        return at.Kind switch
        {
            TimeSpecKind.Start => 0,
            TimeSpecKind.End => max,
            TimeSpecKind.Seq when at.Value <= max => at.Value,
            TimeSpecKind.Seq => throw new DiffKeeperException(ExitCode.NotFound,
                $"session {session.Id} has events #1 to #{max}; there is no #{at.Value}"),
            TimeSpecKind.SinceStart => SeqAtTime(session, at.Value),
            _ => SeqAtTime(session, at.Value - session.StartedWallNs),
        };
    }

    /// <summary>Every path present after event <paramref name="seq"/>: its latest version at or before it, absent ones left out.</summary>
    public List<VersionRecord> StateAt(SessionInfo session, long seq)
    {
        var list = QueryVersions($"""
            WHERE v.id IN (SELECT max(id) FROM versions WHERE {Inherited(session)}(session_id = ?1 AND seq <= ?2) GROUP BY path_id)
            ORDER BY p.rel
            """, session.Id, seq, session);
        list.RemoveAll(v => v.Kind == EntryKind.Absent);
        return list;
    }

    /// <summary>
    /// An SQL condition (with a trailing OR) over a version row: it belongs to a session whose end state
    /// <paramref name="session"/>'s baseline inherits (format 5, <c>sessions.baseline_from</c>); empty when none.
    /// The newest such row of a path is its inherited version; the session's own rows have greater ids.
    /// </summary>
    private static string Inherited(SessionInfo session, string prefix = "") =>
        session.BaselineChain.Count == 0 ? "" : $"{prefix}session_id IN ({string.Join(", ", session.BaselineChain)}) OR ";

    /// <summary>
    /// Every version of a session, oldest first: the versions its baseline inherits (shown as the session's own, at
    /// event 0), then its own; the absent versions that only mark an inherited path gone at the baseline are left out.
    /// </summary>
    public List<VersionRecord> VersionsIn(SessionInfo session)
    {
        var list = QueryVersions($"""
            WHERE v.session_id = ?1 OR v.id IN (SELECT max(id) FROM versions WHERE {Inherited(session)}0 GROUP BY path_id) AND ?2 = ?2
            ORDER BY v.id
            """, session.Id, 0, session);
        return Baseline(list);
    }

    /// <summary>Drops the inherited versions a baseline version of the session replaces, and the absent versions at event 0.</summary>
    private static List<VersionRecord> Baseline(List<VersionRecord> list)
    {
        var own = list.Where(v => !v.Inherited && v.Seq == 0).Select(v => v.PathId).ToHashSet();
        list.RemoveAll(v => (v.Inherited && own.Contains(v.PathId)) || (v.Seq == 0 && v.Kind == EntryKind.Absent));
        return list;
    }

    /// <summary>All versions of one path in a session, oldest first.</summary>
    public List<VersionRecord> VersionsOf(SessionInfo session, long pathId) => Baseline(QueryVersions($"""
        WHERE v.path_id = ?2 AND (v.session_id = ?1 OR v.id = (SELECT max(id) FROM versions WHERE path_id = ?2 AND ({Inherited(session)}0)))
        ORDER BY v.id
        """, session.Id, pathId, session));

    /// <summary>Version row <paramref name="id"/> as stored (no session's view of it), or null when there is none.</summary>
    public VersionRecord? Version(long id) => QueryVersions("WHERE v.id = ?1 AND ?2 = ?2", id, 0, null) is [var v] ? v : null;

    /// <summary>All versions of the trace (every session), for verify.</summary>
    public List<VersionRecord> AllVersions() => QueryVersions("WHERE ?1 = ?1 AND ?2 = ?2 ORDER BY v.id", 0, 0, null);

    /// <summary>
    /// Every version of a session in the order states are built (seq, then id), with its path row's root and
    /// relative path (null when the path row is missing), for verify's check of every moment.
    /// </summary>
    public IEnumerable<VersionOutline> Outline(SessionInfo session)
    {
        // The inherited versions first, as the session's state at event 0 (those its own baseline replaces are left
        // out, and so are inherited absent ones), then its own in the order states are built.
        using var r = _db.Prepare($"""
            SELECT v.id, v.path_id, {RootOf("p", "?1")}, p.rel, CASE WHEN v.session_id = ?1 THEN v.seq ELSE 0 END AS s, v.kind
            FROM versions v LEFT JOIN paths p ON p.id = v.path_id
            WHERE v.session_id = ?1 OR (v.kind != 0 AND v.id IN (SELECT max(id) FROM versions WHERE {Inherited(session)}0 GROUP BY path_id)
                AND NOT EXISTS(SELECT 1 FROM versions o WHERE o.session_id = ?1 AND o.seq = 0 AND o.path_id = v.path_id))
            ORDER BY s, v.id
            """);
        r.Bind(1, session.Id);
        while (r.Step())
        {
            yield return new VersionOutline(r.Int64(0), r.Int64(1), r.Int64OrNull(2), r.PathOrNull(3), r.Int64(4), (EntryKind)r.Int32(5));
        }
    }

    /// <summary>
    /// The root a path row <paramref name="path"/> lies in, as a root of the session of row <paramref name="row"/>
    /// (an event or a version; or the session bound to a parameter, such as ?1): a path row shared by the sessions of one directory (format 5) names the root that
    /// owns it, which each session reports as its own root of that directory. A row that names no root of its
    /// session keeps the owner's id, which the session's roots do not hold (damage, as before format 5).
    /// </summary>
    private string RootOf(string path, string row) => _format >= 5
        ? $"coalesce((SELECT sr.id FROM roots sr WHERE sr.session_id = {(row.StartsWith('?') ? row : row + ".session_id")} AND coalesce(sr.paths_root, sr.id) = {path}.root_id), {path}.root_id)"
        : $"{path}.root_id";

    /// <summary>Rows of every table outside their column's domain (<see cref="CatalogDomain"/>), for verify.</summary>
    public List<string> DomainProblems() => CatalogDomain.Scan(_db, _format);

    /// <summary>
    /// The path id of a root-relative or display path in a session, or null.
    /// A path that is not in the catalog as given is looked up again as a display path (<see cref="PathBytes.Display"/>:
    /// <c>bad\xffbyte</c> names the file whose name has the byte 0xff).
    /// </summary>
    public (long RootId, long PathId, string Rel)? FindPath(SessionInfo session, string path) =>
        FindExactPath(session, path) ?? (PathBytes.ParseDisplay(path) is { } parsed ? FindExactPath(session, parsed) : null);

    private (long RootId, long PathId, string Rel)? FindExactPath(SessionInfo session, string path)
    {
        foreach (var root in session.Roots)
        {
            var rel = path;
            if (path.StartsWith('/'))
            {
                var prefix = root.Path.TrimEnd('/') + "/";
                if (!path.StartsWith(prefix, StringComparison.Ordinal))
                {
                    continue;
                }

                rel = path[prefix.Length..];
            }

            rel = rel.Trim('/');
            // A path row may be shared with other sessions of the directory (format 5): it is this session's path
            // only when the session recorded something of it (an absent baseline version only marks an inherited
            // path gone) or its baseline inherits a version of it.
            var inherited = session.BaselineChain.Count == 0 ? "" : $"""
                OR (coalesce((SELECT v.kind FROM versions v WHERE v.path_id = p.id AND v.session_id IN ({string.Join(", ", session.BaselineChain)}) ORDER BY v.id DESC LIMIT 1), 0) != 0
                    AND NOT EXISTS(SELECT 1 FROM versions v WHERE v.path_id = p.id AND v.session_id = ?3 AND v.seq = 0))
                """;
            using var find = _db.Prepare($"""
                SELECT id FROM paths p WHERE root_id = ?1 AND rel = ?2
                AND (EXISTS(SELECT 1 FROM versions v WHERE v.path_id = p.id AND v.session_id = ?3 AND (v.seq != 0 OR v.kind != 0))
                     OR EXISTS(SELECT 1 FROM events e WHERE e.session_id = ?3 AND (e.path_id = p.id OR e.path2_id = p.id))
                     {inherited})
                """);
            if (find.Bind(1, root.PathsRoot).BindPath(2, rel).Bind(3, session.Id).ScalarInt64() is { } id)
            {
                return (root.Id, id, rel);
            }
        }

        return null;
    }

    public BlobLocation Blob(long rowId)
    {
        if (_snapshotBlobs is not null && _snapshotBlobs.TryGetValue(rowId, out var known))
        {
            return known;
        }

        var r = _blobById.Bind(1, rowId);
        try
        {
            if (!r.Step())
            {
                throw new BlobMissingException(rowId);
            }

            Check(r, 7, "blobs", rowId);
            var hash = r.BlobOrNull(0)!;

            var location = new BlobLocation(rowId, new BlobId(hash), r.Int64(1), r.Int64(2), r.Int32(3), r.Int32(4), (BlobCodec)r.Int32(5), Bases(r.BlobOrNull(6)));
            if (_snapshotBlobs is { Count: < MaxSnapshotBlobs })
            {
                _snapshotBlobs[rowId] = location;
            }

            return location;
        }
        finally
        {
            r.Reset();
        }
    }

    /// <summary>
    /// The 32-byte ids of blob rows <paramref name="rowIds"/>, in their order (<c>ids[32 * i..]</c> is row
    /// <c>rowIds[i]</c>'s), for a content-id check that needs nothing else of the rows: read by ranges of row ids
    /// (a rowid range scan per cluster of the sorted ids, only the hash column), not row by row and not the whole
    /// table. Throws <see cref="BlobMissingException"/> for a row the catalog lacks, exit 5 for a hash that is not 32 bytes.
    /// </summary>
    public byte[] BlobHashes(IReadOnlyList<long> rowIds)
    {
        var ids = GC.AllocateUninitializedArray<byte>(rowIds.Count * BlobId.Size);
        var keys = new long[rowIds.Count];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = rowIds[i];
        }

        BlobHashes(keys, new int[keys.Length], ids);
        return ids;
    }

    /// <summary>
    /// <see cref="BlobHashes(IReadOnlyList{long})"/> into memory of the caller's: <c>ids[32 * i..]</c> is row
    /// <c>rowIds[i]</c>'s id, <paramref name="slots"/> (as long as <paramref name="rowIds"/>) is scratch, and
    /// <paramref name="rowIds"/> is left sorted. <c>materialize</c> passes memory populated in one call: the three arrays
    /// of a 4,096-extent map were ~45 fresh pages of the managed heap, each a page fault.
    /// </summary>
    public unsafe void BlobHashes(Span<long> rowIds, Span<int> slots, Span<byte> ids)
    {
        if (slots.Length != rowIds.Length || ids.Length != (long)rowIds.Length * BlobId.Size)
        {
            throw new ArgumentException("slots and ids must match the row ids", nameof(ids));
        }

        // A hash of another type reads as empty, and is named as damage below.
        using var r = _db.Prepare("SELECT id, CASE WHEN typeof(hash) = 'blob' THEN hash END FROM blobs WHERE id BETWEEN ?1 AND ?2 ORDER BY id");
        fixed (byte* at = ids)
        {
            var take = new HashTaker(at);
            ByRowIdRanges(r, rowIds, slots, ref take);
        }
    }

    private readonly unsafe struct HashTaker(byte* ids) : IRowTaker
    {
        public void Take(SqliteStatement r, long row, int slot)
        {
            var hash = r.BlobSpan(1);
            if (hash.Length != BlobId.Size)
            {
                throw CatalogDomain.Throw("blobs", row.ToString(System.Globalization.CultureInfo.InvariantCulture), "hash is not 32 bytes");
            }

            hash.CopyTo(new Span<byte>(ids + ((long)slot * BlobId.Size), BlobId.Size));
        }
    }

    /// <summary>
    /// The rows <paramref name="rowIds"/> (<see cref="Blob"/> of each, in their order, with the same checks), read by
    /// ranges of row ids as <see cref="BlobHashes(IReadOnlyList{long})"/> reads, not one statement per row: a W4
    /// materialization's 208 changed blocks' rows are new rows of one snapshot, one range scan instead of 208 look-ups.
    /// Throws <see cref="BlobMissingException"/> for a row the catalog lacks.
    /// </summary>
    public BlobLocation[] BlobRows(IReadOnlyList<long> rowIds)
    {
        var keys = new long[rowIds.Count];
        for (var i = 0; i < keys.Length; i++)
        {
            keys[i] = rowIds[i];
        }

        using var r = _db.Prepare($"SELECT id, hash, pack_id, offset, raw_len, stored_len, codec, {_basesColumn}, {_blobBroken} FROM blobs WHERE id BETWEEN ?1 AND ?2 ORDER BY id");
        var take = new RowTaker(new BlobLocation[keys.Length]);
        ByRowIdRanges(r, keys, new int[keys.Length], ref take);
        return take.Result;
    }

    private struct RowTaker(BlobLocation[] result) : IRowTaker
    {
        private BlobLocation? _last;

        public readonly BlobLocation[] Result => result;

        public void Take(SqliteStatement r, long row, int slot)
        {
            if (_last is not { } known || known.BlobRowId != row)
            {
                Check(r, 8, "blobs", row);
                _last = known = new BlobLocation(row, new BlobId(r.BlobOrNull(1)!), r.Int64(2), r.Int64(3), r.Int32(4), r.Int32(5), (BlobCodec)r.Int32(6), Bases(r.BlobOrNull(7)));
            }

            result[slot] = known;
        }
    }

    /// <summary>What <see cref="ByRowIdRanges"/> does with each row it finds.</summary>
    private interface IRowTaker
    {
        /// <summary>Takes the row <paramref name="row"/> the statement <paramref name="r"/> is on, for slot <paramref name="slot"/>.</summary>
        void Take(SqliteStatement r, long row, int slot);
    }

    /// <summary>
    /// Steps <paramref name="r"/> (a query of blobs by <c>id BETWEEN ?1 AND ?2 ORDER BY id</c>, the id first) once per
    /// cluster of the sorted <paramref name="keys"/> (ids no more than <see cref="RangeGap"/> apart, so rows scanned and
    /// not needed stay few), calling <paramref name="take"/> with the statement on that row for each i whose key it
    /// is (its slot: i before the sort). Sorts <paramref name="keys"/> in place, <paramref name="slots"/> with them.
    /// Throws <see cref="BlobMissingException"/> for an id no row has.
    /// </summary>
    private static void ByRowIdRanges<TTaker>(SqliteStatement r, Span<long> keys, Span<int> slots, ref TTaker take)
        where TTaker : struct, IRowTaker
    {
        var n = keys.Length;
        var sorted = true;
        for (var i = 0; i < n; i++)
        {
            slots[i] = i;
            sorted &= i == 0 || keys[i] >= keys[i - 1];
        }

        if (!sorted)
        {
            keys.Sort(slots);
        }

        var k = 0;
        while (k < n)
        {
            var last = k;
            while (last + 1 < n && keys[last + 1] - keys[last] <= RangeGap)
            {
                last++;
            }

            r.Bind(1, keys[k]).Bind(2, keys[last]);
            try
            {
                while (k <= last && r.Step())
                {
                    var row = r.Int64(0);
                    if (row < keys[k])
                    {
                        continue;
                    }

                    if (row > keys[k])
                    {
                        break; // keys[k] is missing
                    }

                    for (; k <= last && keys[k] == row; k++)
                    {
                        take.Take(r, row, slots[k]);
                    }
                }
            }
            finally
            {
                r.Reset();
            }

            if (k <= last)
            {
                throw new BlobMissingException(keys[k]);
            }
        }
    }

    private const long RangeGap = 64;

    public IEnumerable<BlobLocation> AllBlobs()
    {
        using var r = _db.Prepare($"SELECT id, hash, pack_id, offset, raw_len, stored_len, codec, {_basesColumn}, {_blobBroken} FROM blobs ORDER BY pack_id, offset");
        while (r.Step())
        {
            Check(r, 8, "blobs", r.Int64(0));
            var id = new BlobId(r.BlobOrNull(1)!);
            yield return new BlobLocation(r.Int64(0), id, r.Int64(2), r.Int64(3), r.Int32(4), r.Int32(5), (BlobCodec)r.Int32(6), Bases(r.BlobOrNull(7)));
        }
    }

    // A malformed list decodes as one impossible row, so the blob reads as damaged instead of as whole.
    private static long[] Bases(byte[]? encoded) =>
        encoded is null ? [] : PackFormat.DecodeBases(encoded) ?? [-1];

    /// <summary>The greatest blob row id a grouping pass considered (format 6, <c>meta.grouped_through_blob</c>); 0 when none did.</summary>
    internal long GroupedThrough()
    {
        using var mark = _db.Prepare($"SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{TraceWriter.GroupedThroughKey}'");
        return mark.ScalarInt64() ?? 0;
    }

    /// <summary>
    /// The newest pack numbered below <paramref name="below"/>, other than <paramref name="except"/>, under
    /// <see cref="PackFormat.RollSize"/>, whose records are all deltas, with its committed size; null when there is
    /// none. Maintenance appends its deltas there (<c>MaintenancePack</c>): one scan of the blob rows a pass.
    /// </summary>
    internal (long Id, long CommittedSize)? NewestDeltaPack(long below, long except)
    {
        using var r = _db.Prepare($"""
            SELECT b.pack_id, p.committed_size FROM blobs b JOIN packs p ON p.id = b.pack_id
            WHERE b.pack_id < ?1 AND b.pack_id <> ?2 AND b.codec <> {(int)BlobCodec.Slice} AND p.committed_size < ?3
            GROUP BY b.pack_id HAVING max(b.codec NOT IN ({(int)BlobCodec.ZstdDelta}, {(int)BlobCodec.BsDiff})) = 0
            ORDER BY b.pack_id DESC LIMIT 1
            """);
        r.Bind(1, below).Bind(2, except).Bind(3, PackFormat.RollSize);
        return r.Step() ? (r.Int64(0), r.Int64(1)) : null;
    }

    /// <summary>Pack ids with their committed sizes.</summary>
    public IReadOnlyList<(long Id, long CommittedSize)> PacksCommitted()
    {
        using var r = _db.Prepare($"SELECT id, committed_size, {CatalogDomain.Broken("packs")} FROM packs ORDER BY id");
        var list = new List<(long, long)>();
        while (r.Step())
        {
            Check(r, 2, "packs", r.Int64(0));
            list.Add((r.Int64(0), r.Int64(1)));
        }

        return list;
    }

    /// <summary>
    /// Versions with their path rows. With <paramref name="session"/> (bound to ?1), rows of the sessions its baseline
    /// inherits are shown as that session's, at event 0 and time 0, under its roots, and marked
    /// <see cref="VersionRecord.Inherited"/>; without, every row as stored.
    /// </summary>
    private List<VersionRecord> QueryVersions(string where, long s, long x, SessionInfo? session)
    {
        var (sid, seq, time, root) = session is null
            ? ("v.session_id", "v.seq", "v.time_ns", RootOf("p", "v"))
            : ("?1", "CASE WHEN v.session_id = ?1 THEN v.seq ELSE 0 END", "CASE WHEN v.session_id = ?1 THEN v.time_ns ELSE 0 END", RootOf("p", "?1"));
        using var r = _db.Prepare($"""
            SELECT v.id, {sid}, {root}, v.path_id, p.rel, {seq}, {time}, v.kind, v.mode, v.uid, v.gid,
                   v.mtime_ns, v.size, v.content, v.target, v.extents, {_prunedColumn}, {_linkColumn}, {_versionBroken}, {CatalogDomain.Broken("paths", "p.")},
                   v.session_id != {sid}
            FROM versions v JOIN paths p ON p.id = v.path_id
            """ + "\n" + where);
        r.Bind(1, s).Bind(2, x);
        var list = new List<VersionRecord>();
        // A path's versions share its string: decoded and checked once (an untar's catalog has 4 versions a path, and
        // a maintenance pass reads every version twice).
        var rels = new Dictionary<long, string>();
        while (r.Step())
        {
            Check(r, 18, "versions", r.Int64(0));
            Check(r, 19, "paths", r.Int64(3));
            var pathId = r.Int64(3);
            if (!rels.TryGetValue(pathId, out var rel))
            {
                rel = TracePath.Validate(r.Path(4));
                rels.Add(pathId, rel);
            }

            list.Add(new VersionRecord(r.Int64(0), r.Int64(1), r.Int64(2), pathId, rel,
                r.Int64(5), r.Int64(6), (EntryKind)r.Int32(7), r.Int32(8), r.Int32(9), r.Int32(10),
                r.Int64(11), r.Int64(12), r.BlobOrNull(13), r.PathOrNull(14), r.BlobOrNull(15), r.Int64(16) != 0, r.Int64OrNull(17))
            {
                Inherited = r.Int64(20) != 0,
            });
        }

        return list;
    }

    /// <summary>Refuses a row whose domain column <paramref name="column"/> (a <see cref="CatalogDomain.Broken"/> expression) names a broken value.</summary>
    private static void Check(SqliteStatement r, int column, string table, long session, long seq)
    {
        if (!r.IsNull(column))
        {
            var broken = r.String(column);
            r.Reset();
            throw CatalogDomain.Throw(table, string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{session}/{seq}"), broken);
        }
    }

    private static void Check(SqliteStatement r, int column, string table, long row)
    {
        if (!r.IsNull(column))
        {
            var broken = r.String(column);
            r.Reset();
            throw CatalogDomain.Throw(table, row.ToString(System.Globalization.CultureInfo.InvariantCulture), broken);
        }
    }

    public void Dispose()
    {
        _blobById.Dispose();
        Packs.Dispose();
        if (_readerLock is not null)
        {
            _db.Dispose();
            _readerLock.Dispose();
            RemoveSidecars(TraceDir);
        }
    }

    /// <summary>
    /// A read-only connection opens the catalog's <c>-wal</c> and <c>-shm</c> but cannot remove them when it is the
    /// last to close (only a connection that may write checkpoints and removes them): every export, stats or report
    /// left 32 KiB of <c>catalog.db-shm</c> and an empty <c>-wal</c> in the trace, files a CI job uploads (1% of W1's
    /// stored bytes). When no other reader holds the trace (LOCK.readers) and no writer of this process has it open,
    /// a connection that may write (no create, no pragma, no wait) is opened and closed: SQLite removes them only if it
    /// closes with the database's exclusive lock, which any other process's open connection, a writer's included,
    /// prevents. The writer's LOCK is not touched (a `record` starting meanwhile must not find it held). (Readers
    /// cannot simply open for writing: one beside a writer in the same process, as a recording's background
    /// compaction, failed with "disk I/O error".) Best effort: a trace this user may not write keeps them.
    /// </summary>
    private static void RemoveSidecars(string traceDir)
    {
        var catalog = Path.Combine(traceDir, "catalog.db");
        if (!File.Exists(catalog + "-shm") || TraceWriter.IsOpenInThisProcess(traceDir))
        {
            return;
        }

        try
        {
            using var readers = ReaderLock.TryExclusive(traceDir);
            if (readers is not null)
            {
                SqliteDatabase.OpenAndCloseToRemoveSidecars(catalog);
            }
        }
        catch (Exception e) when (e is CatalogException or IOException or UnauthorizedAccessException)
        {
            // another connection came, or this user may not write the trace: the files stay, harmless
        }
    }
}

/// <summary>A version as verify's check of every moment needs it.</summary>
public readonly record struct VersionOutline(long Id, long PathId, long? RootId, string? Rel, long Seq, EntryKind Kind);

/// <summary>A version references a blob row the catalog does not have.</summary>
public sealed class BlobMissingException(long rowId) : Exception($"blob row {rowId} is not in the catalog")
{
    public long RowId { get; } = rowId;
}
