using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Remote;

/// <summary>What a segment says about its one session (the manifest's fields).</summary>
public sealed record SegmentSession(string Command, string Capture, long StartedWallNs, long? EndedNs, int? ExitCode, string Host, string State,
    IReadOnlyList<string> Roots, long Events);

/// <summary>
/// A catalog segment being built: one session's rows copied from a local catalog in one read transaction (so a
/// consistent cut even while a recording commits), renumbered to session 1 (docs/store-format.md, "Remote stores").
/// </summary>
internal sealed class SegmentDatabase : IDisposable
{
    private const int DeltaHeaderSize = 48;

    private static ReadOnlySpan<byte> Magic => "DKSEG\r\n\0"u8;

    private static ReadOnlySpan<byte> DeltaMagic => "DKSEGD\n\0"u8;

    private static ReadOnlySpan<byte> CompactDeltaMagic => "DKSEGD\n\u0002"u8;
    private SqliteDatabase? _db;

    private SegmentDatabase(SqliteDatabase db) => _db = db;

    private SqliteDatabase Db => _db ?? throw new ObjectDisposedException(nameof(SegmentDatabase));

    public static SegmentDatabase Create(string path, string sourceCatalog, long sessionId)
    {
        var db = SqliteDatabase.Open(path, readOnly: false);
        try
        {
            CatalogSchema.CreateOrCheck(db, path);
            db.Execute("CREATE TABLE remote_packs(id INTEGER PRIMARY KEY, name TEXT NOT NULL, size INTEGER NOT NULL)");
            using (var attach = db.Prepare("ATTACH DATABASE ?1 AS src"))
            {
                attach.Bind(1, sourceCatalog).Run();
            }

            db.Execute("BEGIN");
            var s = sessionId.ToString(System.Globalization.CultureInfo.InvariantCulture);
            using (var exists = db.Prepare($"SELECT count(*) FROM src.sessions WHERE id = {s}"))
            {
                if (exists.ScalarInt64() != 1)
                {
                    throw new DiffKeeperException(ExitCode.NotFound, $"the trace has no session {sessionId}");
                }
            }

            // Hard-link identity (format 3) when the local trace has it; a format 2 trace read as is has none.
            string link;
            using (var column = db.Prepare("SELECT count(*) FROM pragma_table_info('versions', 'src') WHERE name = 'link'"))
            {
                link = column.ScalarInt64() == 1 ? "link" : "NULL";
            }

            // Write offsets and lengths (format 4) when the local trace has them; older traces have none (NULL).
            string writeRange;
            using (var column = db.Prepare("SELECT count(*) FROM pragma_table_info('events', 'src') WHERE name IN ('offset', 'length')"))
            {
                writeRange = column.ScalarInt64() == 2 ? "offset, length" : "NULL, NULL";
            }

            // Write runs (format 7) are copied as they are: the segment has this format's schema, and readers expand them.
            using (var column = db.Prepare("SELECT count(*) FROM pragma_table_info('events', 'src') WHERE name = 'run'"))
            {
                writeRange += column.ScalarInt64() == 1 ? ", run" : ", NULL";
            }

            // Path rows shared by the sessions of a directory (format 5) are copied under the session's own root:
            // a segment holds one session, so its roots own their paths, and only the paths the session names.
            string pathsRoot;
            using (var column = db.Prepare("SELECT count(*) FROM pragma_table_info('roots', 'src') WHERE name = 'paths_root'"))
            {
                pathsRoot = column.ScalarInt64() == 1 ? "coalesce(r.paths_root, r.id)" : "r.id";
            }

            // A baseline that inherits an earlier session's end state (format 5) is written out whole: the segment
            // stands alone, so the inherited versions become the session's own, at event 0.
            var chain = CatalogSchema.BaselineChain(db, sessionId, TraceWriter.MaxBaselineChain, "src");

            var inherited = chain.Count == 0 ? "" : $"""
                INSERT INTO main.versions(id, session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents, pruned, link)
                    SELECT id, 1, path_id, 0, 0, kind, mode, uid, gid, mtime_ns, size, content, target, extents, pruned, {link}
                    FROM src.versions WHERE kind != 0 AND id IN (SELECT max(id) FROM src.versions WHERE session_id IN ({string.Join(", ", chain)}) GROUP BY path_id)
                    AND path_id NOT IN (SELECT path_id FROM src.versions WHERE session_id = {s} AND seq = 0);
                """;
            db.Execute($"""
                INSERT INTO main.sessions(id, command, cwd, capture, started_wall_ns, ended_ns, exit_code, lost_events, host, state)
                    SELECT 1, command, cwd, capture, started_wall_ns, ended_ns, exit_code, lost_events, host, state FROM src.sessions WHERE id = {s};
                INSERT INTO main.roots(id, session_id, path) SELECT id, 1, path FROM src.roots WHERE session_id = {s};
                INSERT INTO main.events(session_id, seq, time_ns, op, path_id, path2_id, size, pid, comm, detail, offset, length, run)
                    SELECT 1, seq, time_ns, op, path_id, path2_id, size, pid, comm, detail, {writeRange} FROM src.events WHERE session_id = {s};
                {inherited}
                INSERT INTO main.versions(id, session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents, pruned, link)
                    SELECT id, 1, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents, pruned, {link}
                    FROM src.versions WHERE session_id = {s};
                INSERT INTO main.paths SELECT p.id, r.id, p.rel FROM src.paths p JOIN src.roots r ON {pathsRoot} = p.root_id
                    WHERE r.session_id = {s} AND p.id IN (
                        SELECT path_id FROM main.versions
                        UNION SELECT path_id FROM main.events WHERE path_id IS NOT NULL
                        UNION SELECT path2_id FROM main.events WHERE path2_id IS NOT NULL);
                """);
            return new SegmentDatabase(db);
        }
        catch
        {
            db.Dispose();
            throw;
        }
    }

    public SegmentSession Session()
    {
        var roots = new List<string>();
        using (var r = Db.Prepare("SELECT path FROM roots ORDER BY id"))
        {
            while (r.Step())
            {
                roots.Add(r.String(0));
            }
        }

        // Events, not rows: a write run (format 7) is one row of 1 + its count events.
        long events = 0;
        using (var c = Db.Prepare("SELECT substr(run, 1, 3) FROM events"))
        {
            while (c.Step())
            {
                events += 1 + (c.BlobOrNull(0) is { } run ? EventRun.Followers(run) ?? 0 : 0);
            }
        }

        using var s = Db.Prepare("SELECT command, capture, started_wall_ns, ended_ns, exit_code, coalesce(host, ''), state FROM sessions");
        s.Step();
        var result = new SegmentSession(s.String(0), s.String(1), s.Int64(2), s.Int64OrNull(3), s.IsNull(4) ? null : s.Int32(4), s.String(5), s.String(6), roots, events);
        s.Reset();
        return result;
    }

    /// <summary>The blob rows the session's unpruned file versions reach (remote blobs are whole: no bases to follow).</summary>
    public List<long> ReachableBlobRows()
    {
        var rows = new HashSet<long>();
        using var r = Db.Prepare("SELECT extents, size FROM versions WHERE kind = 1 AND pruned = 0 AND extents IS NOT NULL");
        while (r.Step())
        {
            if (!ExtentMap.TryDecode(r.BlobOrNull(0)!, r.Int64(1), out var extents))
            {
                throw new DiffKeeperException(ExitCode.Corrupt, "a version of the session has a damaged extent map; 'diffkeeper verify' names it");
            }

            foreach (var e in extents)
            {
                rows.Add(e.BlobRowId);
            }
        }

        return [.. rows.Order()];
    }

    /// <summary>Writes the blob rows pointing into remote packs, and the packs; returns the pack names used.</summary>
    public List<string> WriteBlobRows(IReadOnlyList<BlobLocation> locations, RemoteBlobSummary summary)
    {
        var packIds = new Dictionary<string, long>(StringComparer.Ordinal);
        using (var insert = Db.Prepare("INSERT OR IGNORE INTO blobs(id, hash, pack_id, offset, raw_len, stored_len, codec, bases) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL)"))
        {
            foreach (var loc in locations)
            {
                if (!summary.TryGet(loc.Id, out var remote))
                {
                    throw new InvalidOperationException($"blob {loc.Id} was not uploaded");
                }

                if (!packIds.TryGetValue(remote.Pack, out var packId))
                {
                    packIds[remote.Pack] = packId = packIds.Count + 1;
                }

                insert.Bind(1, loc.BlobRowId).Bind(2, loc.Id.ToArray()).Bind(3, packId).Bind(4, remote.Offset)
                    .Bind(5, (long)remote.RawLength).Bind(6, (long)remote.StoredLength).Bind(7, (long)remote.Codec).Run();
            }
        }

        using (var pack = Db.Prepare("INSERT INTO remote_packs(id, name, size) VALUES (?1, ?2, ?3)"))
        using (var local = Db.Prepare("INSERT INTO packs(id, committed_size) VALUES (?1, ?2)"))
        {
            foreach (var (name, id) in packIds)
            {
                pack.Bind(1, id).Bind(2, name).Bind(3, summary.PackSize(name)).Run();
                local.Bind(1, id).Bind(2, summary.PackSize(name)).Run();
            }
        }

        return [.. packIds.OrderBy(p => p.Value).Select(p => p.Key)];
    }

    /// <summary>Commits, detaches the source and closes: the file is then a self-contained catalog.</summary>
    public void Close()
    {
        Db.Execute("COMMIT");
        Db.Execute("DETACH DATABASE src");
        Db.Execute("PRAGMA journal_mode=DELETE");
        Dispose();
    }

    /// <summary>The segment object: magic, length, one zstd frame of the database file.</summary>
    public static byte[] Pack(byte[] database)
    {
        var frame = new byte[16 + Zstd.CompressBound(database.Length)];
        Magic.CopyTo(frame);
        BinaryPrimitives.WriteInt64LittleEndian(frame.AsSpan(8), database.Length);
        var n = Zstd.Compress(database, frame.AsSpan(16), level: 3);
        return frame[..(16 + n)];
    }

    /// <summary>
    /// A delta segment object: magic, then one zstd frame (content size set) of the database with the base's
    /// database as prefix dictionary; the base is the manifest's <c>segment_base</c> (docs/store-format.md, "Remote
    /// stores": delta segment).
    /// </summary>
    public static byte[] PackDelta(byte[] database, byte[] baseDatabase)
    {
        var frame = new byte[CompactDeltaMagic.Length + Zstd.CompressBound(database.Length)];
        CompactDeltaMagic.CopyTo(frame);
        var n = Zstd.CompressWithPrefix(database, baseDatabase, frame.AsSpan(CompactDeltaMagic.Length), level: 19);
        return frame[..(CompactDeltaMagic.Length + n)];
    }

    /// <summary>Whether a segment object is a delta (either form); a malformed header is damage naming it.</summary>
    public static bool IsDelta(string name, byte[] segment)
    {
        var magic = segment.AsSpan(0, Math.Min(8, segment.Length));
        return magic.SequenceEqual(Magic) && segment.Length >= 16 ? false
            : (magic.SequenceEqual(DeltaMagic) && segment.Length >= DeltaHeaderSize) || (magic.SequenceEqual(CompactDeltaMagic) && segment.Length > 8) ? true
            : throw new DiffKeeperException(ExitCode.Corrupt, $"the segment {name} is damaged (bad header)");
    }

    /// <summary>The SHA-256 of the base a delta segment of the first form names in its header; null for any other segment.</summary>
    public static string? NamedBase(byte[] segment) =>
        segment.Length >= DeltaHeaderSize && segment.AsSpan(0, 8).SequenceEqual(DeltaMagic) ? Convert.ToHexStringLower(segment.AsSpan(16, 32)) : null;

    /// <summary>
    /// The database file of a segment object, whole or (with its base's database) a delta; a malformed one is
    /// damage naming it.
    /// </summary>
    public static byte[] Unpack(string name, byte[] segment, byte[]? baseDatabase = null)
    {
        var delta = IsDelta(name, segment);
        if (delta && baseDatabase is null)
        {
            throw new InvalidOperationException($"the segment {name} is a delta: its base is needed");
        }

        var compact = segment.AsSpan(0, 8).SequenceEqual(CompactDeltaMagic);
        var frame = segment.AsSpan(compact ? 8 : delta ? DeltaHeaderSize : 16);
        var length = compact ? Zstd.FrameContentSize(frame) ?? -1 : BinaryPrimitives.ReadInt64LittleEndian(segment.AsSpan(8));
        if (length is < 0 or > 1L << 31)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"the segment {name} is damaged (length {length})");
        }

        var database = new byte[length];
        var ok = delta
            ? Zstd.TryDecompressWithPrefix(frame, baseDatabase, database, out var error)
            : Zstd.TryDecompress(frame, database, out error);
        return ok ? database : throw new DiffKeeperException(ExitCode.Corrupt, $"the segment {name} is damaged ({error})");
    }

    public void Dispose()
    {
        _db?.Dispose();
        _db = null;
    }
}
