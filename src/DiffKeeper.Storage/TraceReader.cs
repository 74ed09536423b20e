using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;
using Microsoft.Data.Sqlite;

namespace DiffKeeper.Storage;

/// <summary>
/// Read access to a trace, without the writer's lock: sees the catalog as of the last commit, even while a
/// recording is running (SQLite WAL snapshot per query). Every path it returns has passed <see cref="TracePath.Validate"/>.
/// Not thread-safe; <see cref="Packs"/> is.
/// </summary>
public sealed class TraceReader : IDisposable
{
    private readonly SqliteConnection _db;
    private readonly SqliteCommand _blobById;

    private TraceReader(string traceDir, SqliteConnection db)
    {
        TraceDir = traceDir;
        _db = db;
        Packs = new PackReader(traceDir);
        _blobById = db.CreateCommand();
        _blobById.CommandText = "SELECT hash, pack_id, offset, raw_len, stored_len, codec FROM blobs WHERE id = $id";
        _blobById.Parameters.Add(new SqliteParameter { ParameterName = "$id" });
    }

    public string TraceDir { get; }

    public PackReader Packs { get; }

    public static TraceReader Open(string traceDir)
    {
        traceDir = Path.GetFullPath(traceDir);
        var catalogPath = Path.Combine(traceDir, "catalog.db");
        if (!File.Exists(catalogPath))
        {
            throw new DiffKeeperException(ExitCode.NoTrace,
                $"no trace at {traceDir} (no catalog.db there); record one with 'diffkeeper record', or pass --trace DIR or set DIFFKEEPER_TRACE");
        }

        SqliteConnection db;
        try
        {
            db = SqliteSetup.Open(catalogPath, readOnly: true);
        }
        catch (SqliteException e)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"cannot open the catalog {catalogPath}: {e.Message}", e);
        }

        try
        {
            CatalogSchema.Check(db, catalogPath);
        }
        catch
        {
            db.Dispose();
            throw;
        }

        return new TraceReader(traceDir, db);
    }

    public IReadOnlyList<SessionInfo> Sessions()
    {
        var roots = new Dictionary<long, List<RootInfo>>();
        using (var cmd = _db.CreateCommand())
        {
            cmd.CommandText = "SELECT id, session_id, path FROM roots ORDER BY id";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var sid = r.GetInt64(1);
                if (!roots.TryGetValue(sid, out var list))
                {
                    roots[sid] = list = [];
                }

                list.Add(new RootInfo(r.GetInt64(0), r.GetString(2)));
            }
        }

        var sessions = new List<SessionInfo>();
        using (var cmd = _db.CreateCommand())
        {
            cmd.CommandText = "SELECT id, command, cwd, capture, started_wall_ns, ended_ns, exit_code, lost_events, state FROM sessions ORDER BY id";
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var id = r.GetInt64(0);
                sessions.Add(new SessionInfo(id, r.GetString(1), r.GetString(2), r.GetString(3), r.GetInt64(4),
                    r.IsDBNull(5) ? null : r.GetInt64(5), r.IsDBNull(6) ? null : r.GetInt32(6), r.GetInt64(7),
                    r.GetString(8), roots.TryGetValue(id, out var list) ? list : []));
            }
        }

        return sessions;
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

        var root = session.Roots.First(r => r.Id == rootId).Path;
        return root.EndsWith('/') ? root + rel : root + "/" + rel;
    }

    public IEnumerable<EventRecord> Events(SessionInfo session, long fromSeq = 0, long toSeq = long.MaxValue)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = """
            SELECT e.seq, e.time_ns, e.op, p1.root_id, p1.rel, p2.root_id, p2.rel, e.size, e.pid, e.comm, e.detail
            FROM events e LEFT JOIN paths p1 ON p1.id = e.path_id LEFT JOIN paths p2 ON p2.id = e.path2_id
            WHERE e.session_id = $s AND e.seq >= $from AND e.seq <= $to ORDER BY e.seq
            """;
        cmd.Parameters.AddWithValue("$s", session.Id);
        cmd.Parameters.AddWithValue("$from", fromSeq);
        cmd.Parameters.AddWithValue("$to", toSeq);
        using var r = cmd.ExecuteReader();
        while (r.Read())
        {
            string? p1 = r.IsDBNull(4) ? null : DisplayPath(session, r.GetInt64(3), TracePath.Validate(r.GetString(4)));
            string? p2 = r.IsDBNull(6) ? null : DisplayPath(session, r.GetInt64(5), TracePath.Validate(r.GetString(6)));
            yield return new EventRecord(session.Id, r.GetInt64(0), r.GetInt64(1), (ChangeOp)r.GetInt32(2), p1, p2,
                r.IsDBNull(7) ? null : r.GetInt64(7), r.IsDBNull(8) ? null : r.GetInt32(8),
                r.IsDBNull(9) ? null : r.GetString(9), r.IsDBNull(10) ? null : r.GetString(10));
        }
    }

    public long MaxSeq(SessionInfo session) => Scalar("SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $s", session.Id, 0);

    /// <summary>The last event at or before <paramref name="timeNs"/> since start (0: only the baseline).</summary>
    public long SeqAtTime(SessionInfo session, long timeNs) =>
        Scalar("SELECT coalesce(max(seq), 0) FROM events WHERE session_id = $s AND time_ns <= $x", session.Id, timeNs);

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
        var list = QueryVersions("""
            WHERE v.id IN (SELECT max(id) FROM versions WHERE session_id = $s AND seq <= $x GROUP BY path_id)
            ORDER BY p.rel
            """, session.Id, seq);
        list.RemoveAll(v => v.Kind == EntryKind.Absent);
        return list;
    }

    /// <summary>All versions of one path in a session, oldest first.</summary>
    public List<VersionRecord> VersionsOf(SessionInfo session, long pathId) =>
        QueryVersions("WHERE v.session_id = $s AND v.path_id = $x ORDER BY v.id", session.Id, pathId);

    /// <summary>All versions of the trace (every session), for verify.</summary>
    public List<VersionRecord> AllVersions() => QueryVersions("WHERE $s = $s AND $x = $x ORDER BY v.id", 0, 0);

    /// <summary>The path id of a root-relative or display path in a session, or null.</summary>
    public (long RootId, long PathId, string Rel)? FindPath(SessionInfo session, string path)
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
            using var cmd = _db.CreateCommand();
            cmd.CommandText = "SELECT id FROM paths WHERE root_id = $r AND rel = $rel";
            cmd.Parameters.AddWithValue("$r", root.Id);
            cmd.Parameters.AddWithValue("$rel", rel);
            if (cmd.ExecuteScalar() is long id)
            {
                return (root.Id, id, rel);
            }
        }

        return null;
    }

    public BlobLocation Blob(long rowId)
    {
        _blobById.Parameters[0].Value = rowId;
        using var r = _blobById.ExecuteReader();
        if (!r.Read())
        {
            throw new BlobMissingException(rowId);
        }

        return new BlobLocation(rowId, new BlobId((byte[])r[0]), r.GetInt64(1), r.GetInt64(2), r.GetInt32(3), r.GetInt32(4), (BlobCodec)r.GetInt32(5));
    }

    public IEnumerable<BlobLocation> AllBlobs()
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT id, hash, pack_id, offset, raw_len, stored_len, codec FROM blobs ORDER BY pack_id, offset";
        using var r = cmd.ExecuteReader();
        while (r.Read())
        {
            yield return new BlobLocation(r.GetInt64(0), new BlobId((byte[])r[1]), r.GetInt64(2), r.GetInt64(3), r.GetInt32(4), r.GetInt32(5), (BlobCodec)r.GetInt32(6));
        }
    }

    /// <summary>Pack ids with their committed sizes.</summary>
    public IReadOnlyList<(long Id, long CommittedSize)> PacksCommitted()
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT id, committed_size FROM packs ORDER BY id";
        using var r = cmd.ExecuteReader();
        var list = new List<(long, long)>();
        while (r.Read())
        {
            list.Add((r.GetInt64(0), r.GetInt64(1)));
        }

        return list;
    }

    private List<VersionRecord> QueryVersions(string where, long s, long x)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = """
            SELECT v.id, v.session_id, p.root_id, v.path_id, p.rel, v.seq, v.time_ns, v.kind, v.mode, v.uid, v.gid,
                   v.mtime_ns, v.size, v.content, v.target, v.extents
            FROM versions v JOIN paths p ON p.id = v.path_id
            """ + "\n" + where;
        cmd.Parameters.AddWithValue("$s", s);
        cmd.Parameters.AddWithValue("$x", x);
        using var r = cmd.ExecuteReader();
        var list = new List<VersionRecord>();
        while (r.Read())
        {
            list.Add(new VersionRecord(r.GetInt64(0), r.GetInt64(1), r.GetInt64(2), r.GetInt64(3), TracePath.Validate(r.GetString(4)),
                r.GetInt64(5), r.GetInt64(6), (EntryKind)r.GetInt32(7), r.GetInt32(8), r.GetInt32(9), r.GetInt32(10),
                r.GetInt64(11), r.GetInt64(12), r.IsDBNull(13) ? null : (byte[])r[13], r.IsDBNull(14) ? null : r.GetString(14),
                r.IsDBNull(15) ? null : (byte[])r[15]));
        }

        return list;
    }

    private long Scalar(string sql, long s, long x)
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        cmd.Parameters.AddWithValue("$s", s);
        cmd.Parameters.AddWithValue("$x", x);
        return (long)cmd.ExecuteScalar()!;
    }

    public void Dispose()
    {
        _blobById.Dispose();
        Packs.Dispose();
        _db.Dispose();
    }
}

/// <summary>A version references a blob row the catalog does not have.</summary>
public sealed class BlobMissingException(long rowId) : Exception($"blob row {rowId} is not in the catalog")
{
    public long RowId { get; } = rowId;
}
