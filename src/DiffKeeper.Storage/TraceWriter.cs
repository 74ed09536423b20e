using System.Buffers;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;
using Microsoft.Data.Sqlite;

namespace DiffKeeper.Storage;

/// <summary>
/// The one writer of a trace. Contract: everything added since the last <see cref="Commit"/> becomes visible to
/// readers, and durable against a crash of this process, atomically when <see cref="Commit"/> returns; before
/// that, nothing of it is visible. Blob bytes are fsynced before the commit that references them (crash
/// protocol, docs/store-format.md). Not thread-safe: one thread writes.
/// </summary>
public sealed class TraceWriter : IDisposable
{
    private readonly TraceLock _lock;
    private readonly SqliteConnection _db;
    private readonly Dictionary<BlobId, long> _newBlobs = [];
    private readonly Dictionary<(long Root, string Rel), long> _pathIds = [];
    private readonly SqliteCommand _insertEvent;
    private readonly SqliteCommand _insertVersion;
    private readonly SqliteCommand _insertPath;
    private readonly SqliteCommand _findBlob;
    private readonly SqliteCommand _insertBlob;
    private SqliteTransaction? _tx;
    private PackWriter? _pack;
    private long _nextPackId;

    private TraceWriter(string traceDir, TraceLock traceLock, SqliteConnection db)
    {
        TraceDir = traceDir;
        _lock = traceLock;
        _db = db;
        _insertEvent = Prepare("INSERT INTO events(session_id, seq, time_ns, op, path_id, path2_id, size, pid, comm, detail) VALUES ($s, $seq, $t, $op, $p, $p2, $size, $pid, $comm, $detail)",
            "$s", "$seq", "$t", "$op", "$p", "$p2", "$size", "$pid", "$comm", "$detail");
        _insertVersion = Prepare("INSERT INTO versions(session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents) VALUES ($s, $p, $seq, $t, $k, $mode, $uid, $gid, $mtime, $size, $content, $target, $extents)",
            "$s", "$p", "$seq", "$t", "$k", "$mode", "$uid", "$gid", "$mtime", "$size", "$content", "$target", "$extents");
        _insertPath = Prepare("INSERT INTO paths(root_id, rel) VALUES ($r, $rel)", "$r", "$rel");
        _findBlob = Prepare("SELECT id FROM blobs WHERE hash = $h", "$h");
        _insertBlob = Prepare("INSERT INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec) VALUES ($h, $pack, $off, $raw, $stored, $codec)",
            "$h", "$pack", "$off", "$raw", "$stored", "$codec");
    }

    public string TraceDir { get; }

    /// <summary>Bytes appended to packs by this writer.</summary>
    public long StoredBytesWritten { get; private set; }

    /// <summary>
    /// Opens (creating if needed, 0700) the trace for writing: takes the lock, checks the format, cuts torn pack
    /// tails back to their committed size, and marks sessions a crashed writer left open as interrupted.
    /// </summary>
    public static TraceWriter Open(string traceDir)
    {
        traceDir = Path.GetFullPath(traceDir);
        try
        {
            Directory.CreateDirectory(traceDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
        catch (IOException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot create the trace directory {traceDir}: {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot create the trace directory {traceDir}: permission denied", e);
        }

        var traceLock = TraceLock.Acquire(traceDir);
        try
        {
            var catalogPath = Path.Combine(traceDir, "catalog.db");
            var db = SqliteSetup.Open(catalogPath, readOnly: false);
            CatalogSchema.CreateOrCheck(db, catalogPath);
            var writer = new TraceWriter(traceDir, traceLock, db);
            writer.Recover();
            return writer;
        }
        catch
        {
            traceLock.Dispose();
            throw;
        }
    }

    private void Recover()
    {
        using var cmd = _db.CreateCommand();
        cmd.CommandText = "SELECT id, committed_size FROM packs";
        var packs = new List<(long Id, long Size)>();
        using (var r = cmd.ExecuteReader())
        {
            while (r.Read())
            {
                packs.Add((r.GetInt64(0), r.GetInt64(1)));
            }
        }

        foreach (var (id, size) in packs)
        {
            var path = Path.Combine(TraceDir, PackFormat.RelativePath(id));
            if (File.Exists(path) && new FileInfo(path).Length > size)
            {
                using var h = File.OpenHandle(path, FileMode.Open, FileAccess.Write);
                RandomAccess.SetLength(h, size);
                RandomAccess.FlushToDisk(h);
            }
        }

        // A pack file the catalog never committed (crash before the first commit) holds nothing referenced.
        var known = packs.Select(p => p.Id).ToHashSet();
        var packsDir = Path.Combine(TraceDir, "packs");
        if (Directory.Exists(packsDir))
        {
            foreach (var file in Directory.EnumerateFiles(packsDir, "*.pack", SearchOption.AllDirectories))
            {
                if (long.TryParse(Path.GetFileNameWithoutExtension(file), System.Globalization.NumberStyles.HexNumber, null, out var id) && !known.Contains(id))
                {
                    File.Delete(file);
                }
            }
        }

        _nextPackId = packs.Count == 0 ? 1 : packs.Max(p => p.Id) + 1;
        cmd.CommandText = "UPDATE sessions SET state = 'interrupted' WHERE state = 'recording'";
        cmd.ExecuteNonQuery();
    }

    public long BeginSession(string command, string cwd, string capture, long startedWallNs, IReadOnlyList<string> roots, out IReadOnlyList<long> rootIds)
    {
        var tx = Tx();
        using var cmd = _db.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = "INSERT INTO sessions(command, cwd, capture, started_wall_ns, host, state) VALUES ($c, $cwd, $cap, $t, $host, 'recording') RETURNING id";
        cmd.Parameters.AddWithValue("$c", command);
        cmd.Parameters.AddWithValue("$cwd", cwd);
        cmd.Parameters.AddWithValue("$cap", capture);
        cmd.Parameters.AddWithValue("$t", startedWallNs);
        cmd.Parameters.AddWithValue("$host", Environment.MachineName);
        var sessionId = (long)cmd.ExecuteScalar()!;
        var ids = new List<long>();
        foreach (var root in roots)
        {
            cmd.Parameters.Clear();
            cmd.CommandText = "INSERT INTO roots(session_id, path) VALUES ($s, $p) RETURNING id";
            cmd.Parameters.AddWithValue("$s", sessionId);
            cmd.Parameters.AddWithValue("$p", root);
            ids.Add((long)cmd.ExecuteScalar()!);
        }

        rootIds = ids;
        Commit();
        return sessionId;
    }

    /// <summary>Sets the time 0 of a session (the moment its command started).</summary>
    public void SetSessionStart(long sessionId, long startedWallNs)
    {
        using var cmd = _db.CreateCommand();
        cmd.Transaction = Tx();
        cmd.CommandText = "UPDATE sessions SET started_wall_ns = $t WHERE id = $s";
        cmd.Parameters.AddWithValue("$t", startedWallNs);
        cmd.Parameters.AddWithValue("$s", sessionId);
        cmd.ExecuteNonQuery();
    }

    public void FinishSession(long sessionId, long endedNs, int? exitCode, long lostEvents)
    {
        using var cmd = _db.CreateCommand();
        cmd.Transaction = Tx();
        cmd.CommandText = "UPDATE sessions SET ended_ns = $e, exit_code = $x, lost_events = $l, state = 'finished' WHERE id = $s";
        cmd.Parameters.AddWithValue("$e", endedNs);
        cmd.Parameters.AddWithValue("$x", (object?)exitCode ?? DBNull.Value);
        cmd.Parameters.AddWithValue("$l", lostEvents);
        cmd.Parameters.AddWithValue("$s", sessionId);
        cmd.ExecuteNonQuery();
        Commit();
    }

    public long PathId(long rootId, string rel)
    {
        if (_pathIds.TryGetValue((rootId, rel), out var id))
        {
            return id;
        }

        _insertPath.Transaction = Tx();
        _insertPath.Parameters[0].Value = rootId;
        _insertPath.Parameters[1].Value = rel;
        id = InsertReturningRowId(_insertPath);
        _pathIds[(rootId, rel)] = id;
        return id;
    }

    public void AddEvent(long sessionId, in NewEvent e)
    {
        var p = _insertEvent.Parameters;
        _insertEvent.Transaction = Tx();
        p[0].Value = sessionId;
        p[1].Value = e.Seq;
        p[2].Value = e.TimeNs;
        p[3].Value = (int)e.Op;
        p[4].Value = (object?)e.PathId ?? DBNull.Value;
        p[5].Value = (object?)e.Path2Id ?? DBNull.Value;
        p[6].Value = (object?)e.Size ?? DBNull.Value;
        p[7].Value = (object?)e.Pid ?? DBNull.Value;
        p[8].Value = (object?)e.Comm ?? DBNull.Value;
        p[9].Value = (object?)e.Detail ?? DBNull.Value;
        _insertEvent.ExecuteNonQuery();
    }

    public long AddVersion(long sessionId, NewVersion v)
    {
        var p = _insertVersion.Parameters;
        _insertVersion.Transaction = Tx();
        p[0].Value = sessionId;
        p[1].Value = v.PathId;
        p[2].Value = v.Seq;
        p[3].Value = v.TimeNs;
        p[4].Value = (int)v.Kind;
        p[5].Value = v.Mode;
        p[6].Value = v.Uid;
        p[7].Value = v.Gid;
        p[8].Value = v.MtimeNs;
        p[9].Value = v.Size;
        p[10].Value = (object?)v.ContentId ?? DBNull.Value;
        p[11].Value = (object?)v.Target ?? DBNull.Value;
        p[12].Value = (object?)v.Extents ?? DBNull.Value;
        return InsertReturningRowId(_insertVersion);
    }

    /// <summary>Stores one chunk (deduplicated by SHA-256); returns its catalog row id.</summary>
    public long PutBlob(ReadOnlySpan<byte> data, out BlobId id)
    {
        id = BlobId.Of(data);
        if (Find(id) is { } existing)
        {
            return existing;
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

    /// <summary>The row id of a blob already in the trace, or null.</summary>
    public long? Find(BlobId id)
    {
        if (_newBlobs.TryGetValue(id, out var rowId))
        {
            return rowId;
        }

        _findBlob.Transaction = Tx();
        _findBlob.Parameters[0].Value = id.ToArray();
        if (_findBlob.ExecuteScalar() is long existing)
        {
            _newBlobs[id] = existing;
            return existing;
        }

        return null;
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

        var pack = CurrentPack();
        var offset = pack.Append(id, codec, rawLength, payload);
        StoredBytesWritten += PackFormat.RecordSize(payload.Length);
        var p = _insertBlob.Parameters;
        _insertBlob.Transaction = Tx();
        p[0].Value = id.ToArray();
        p[1].Value = pack.PackId;
        p[2].Value = offset;
        p[3].Value = rawLength;
        p[4].Value = payload.Length;
        p[5].Value = (int)codec;
        var rowId = InsertReturningRowId(_insertBlob);
        _newBlobs[id] = rowId;
        return rowId;
    }

    /// <summary>Whether anything was added since the last commit.</summary>
    public bool HasPending => _tx is not null;

    /// <summary>Makes everything added so far durable and visible: fsync the pack, then commit the catalog.</summary>
    public void Commit()
    {
        if (_tx is null)
        {
            return;
        }

        if (_pack is not null)
        {
            _pack.Sync();
            using var cmd = _db.CreateCommand();
            cmd.Transaction = _tx;
            cmd.CommandText = "INSERT INTO packs(id, committed_size) VALUES ($id, $size) ON CONFLICT(id) DO UPDATE SET committed_size = excluded.committed_size";
            cmd.Parameters.AddWithValue("$id", _pack.PackId);
            cmd.Parameters.AddWithValue("$size", _pack.Length);
            cmd.ExecuteNonQuery();
        }

        _tx.Commit();
        _tx.Dispose();
        _tx = null;
    }

    private PackWriter CurrentPack()
    {
        if (_pack is not null && _pack.Length >= PackFormat.RollSize)
        {
            Commit();
            _pack.Dispose();
            _pack = null;
        }

        if (_pack is null)
        {
            _pack = PackWriter.Create(TraceDir, _nextPackId++);
        }

        return _pack;
    }

    private SqliteTransaction Tx() => _tx ??= _db.BeginTransaction();

    // INSERT ... RETURNING goes through a data reader, which costs several times the insert itself on the hot
    // path; the connection's last rowid is the same number.
    private long InsertReturningRowId(SqliteCommand insert)
    {
        insert.ExecuteNonQuery();
        return SQLitePCL.raw.sqlite3_last_insert_rowid(_db.Handle);
    }

    private SqliteCommand Prepare(string sql, params string[] parameters)
    {
        var cmd = _db.CreateCommand();
        cmd.CommandText = sql;
        foreach (var name in parameters)
        {
            cmd.Parameters.Add(new SqliteParameter { ParameterName = name });
        }

        return cmd;
    }

    public void Dispose()
    {
        Commit();
        _insertEvent.Dispose();
        _insertVersion.Dispose();
        _insertPath.Dispose();
        _findBlob.Dispose();
        _insertBlob.Dispose();
        _pack?.Dispose();
        _db.Dispose();
        _lock.Dispose();
    }
}
