using DiffKeeper.Core;

namespace DiffKeeper.Storage.Catalog;

/// <summary>The catalog's DDL and format check (docs/store-format.md, "Catalog").</summary>
public static class CatalogSchema
{
    public const int FormatVersion = 7;

    private const string Ddl = """
        CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS sessions(
            id INTEGER PRIMARY KEY,
            command TEXT NOT NULL,
            cwd TEXT NOT NULL,
            capture TEXT NOT NULL,
            started_wall_ns INTEGER NOT NULL,
            ended_ns INTEGER,
            exit_code INTEGER,
            lost_events INTEGER NOT NULL DEFAULT 0,
            host TEXT,
            state TEXT NOT NULL,
            baseline_from INTEGER);
        CREATE TABLE IF NOT EXISTS roots(id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, path TEXT NOT NULL, paths_root INTEGER);
        CREATE INDEX IF NOT EXISTS roots_by_session ON roots(session_id);
        CREATE TABLE IF NOT EXISTS paths(id INTEGER PRIMARY KEY, root_id INTEGER NOT NULL, rel TEXT NOT NULL, UNIQUE(root_id, rel));
        CREATE TABLE IF NOT EXISTS events(
            session_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            time_ns INTEGER NOT NULL,
            op INTEGER NOT NULL,
            path_id INTEGER,
            path2_id INTEGER,
            size INTEGER,
            pid INTEGER,
            comm TEXT,
            detail TEXT,
            offset INTEGER,
            length INTEGER,
            run BLOB,
            PRIMARY KEY(session_id, seq)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS versions(
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL,
            path_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            time_ns INTEGER NOT NULL,
            kind INTEGER NOT NULL,
            mode INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            gid INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            size INTEGER NOT NULL,
            content BLOB,
            target TEXT,
            extents BLOB,
            pruned INTEGER NOT NULL DEFAULT 0,
            link INTEGER);
        CREATE INDEX IF NOT EXISTS versions_by_session ON versions(session_id, seq);
        CREATE INDEX IF NOT EXISTS versions_by_path ON versions(path_id, seq);
        CREATE TABLE IF NOT EXISTS blobs(
            id INTEGER PRIMARY KEY,
            hash BLOB NOT NULL UNIQUE,
            pack_id INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            raw_len INTEGER NOT NULL,
            stored_len INTEGER NOT NULL,
            codec INTEGER NOT NULL,
            bases BLOB);
        CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, committed_size INTEGER NOT NULL);
        """;

    /// <summary>Creates the tables of a new catalog, or checks the format of an existing one.</summary>
    internal static void CreateOrCheck(SqliteDatabase db, string catalogPath)
    {
        Check(db, catalogPath, allowMissing: true);
        if (IsCurrent(db))
        {
            // Every open of a writer's catalog (each `record`, `gc`, keep mode's start) came here: a write transaction,
            // six migration checks, the DDL parsed and run, the meta row written with the version read by reflection,
            // and the check again, ~40 statements for a catalog that needed none of them.
            return;
        }

        db.Execute("BEGIN IMMEDIATE");
        try
        {
            MigrateFromFormat1(db);
            MigrateFromFormat2(db);
            MigrateFromFormat3(db);
            MigrateFromFormat4(db);
            MigrateFromFormat5(db);
            MigrateFromFormat6(db);
            db.Execute(Ddl);
            using var meta = db.Prepare("INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', ?1), ('created_by', ?2)");
            meta.Bind(1, FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
                .Bind(2, "diffkeeper " + typeof(CatalogSchema).Assembly.GetName().Version?.ToString(3))
                .Run();
            db.Execute("COMMIT");
        }
        catch
        {
            try
            {
                db.Execute("ROLLBACK");
            }
            catch (CatalogException)
            {
                // SQLite ends the transaction itself on some failures (SQLITE_FULL, I/O errors): the first error is the one to report.
            }

            throw;
        }

        Check(db, catalogPath);
    }

    // The tables and indexes the DDL makes, read from it ("IF NOT EXISTS name"), so the two cannot disagree.
    private static readonly string[] DdlObjects =
    [
        .. Ddl.Split("IF NOT EXISTS ", StringSplitOptions.None).Skip(1)
            .Select(rest => rest[..rest.IndexOfAny([' ', '('])]),
    ];

    /// <summary>
    /// Whether the catalog is of this format and holds every table and index of the DDL: a catalog this version made
    /// or migrated. One missing (a damaged catalog) takes the full path, which makes it again as before.
    /// </summary>
    private static bool IsCurrent(SqliteDatabase db)
    {
        using (var exists = db.Prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"))
        {
            if (exists.ScalarInt64() == 0 || Version(db) != FormatVersion)
            {
                return false;
            }
        }

        using var objects = db.Prepare($"SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'index') AND name IN ({string.Join(", ", DdlObjects.Select(n => $"'{n}'"))})");
        return objects.ScalarInt64() == DdlObjects.Length;
    }

    /// <summary>The format of a catalog that passed <see cref="Check"/>.</summary>
    internal static int Version(SqliteDatabase db)
    {
        using var cmd = db.Prepare("SELECT value FROM meta WHERE key = 'format_version'");
        return cmd.Step() && int.TryParse(cmd.StringOrNull(0), out var v) ? v : FormatVersion;
    }

    /// <summary>
    /// Format 1 lacks delta codecs and the columns that describe them: add the columns with their defaults (every
    /// format-1 blob is whole, no version is pruned) and record format 2, inside the caller's transaction.
    /// </summary>
    private static void MigrateFromFormat1(SqliteDatabase db) => Migrate(db, 1, """
        ALTER TABLE blobs ADD COLUMN bases BLOB;
        ALTER TABLE versions ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
        UPDATE meta SET value = '2' WHERE key = 'format_version';
        """);

    /// <summary>
    /// Format 2 lacks <c>versions.link</c> (hard links were recorded as separate files): add it, NULL for every
    /// version (they stay separate files), and record format 3, inside the caller's transaction.
    /// </summary>
    private static void MigrateFromFormat2(SqliteDatabase db) => Migrate(db, 2, """
        ALTER TABLE versions ADD COLUMN link INTEGER;
        UPDATE meta SET value = '3' WHERE key = 'format_version';
        """);

    /// <summary>
    /// Format 3 lacks <c>events.offset</c> and <c>events.length</c> (where a write landed and how many bytes it
    /// wrote): add them, NULL for every event (unknown, as for an inexact backend), and record format 4, inside
    /// the caller's transaction.
    /// </summary>
    private static void MigrateFromFormat3(SqliteDatabase db) => Migrate(db, 3, """
        ALTER TABLE events ADD COLUMN offset INTEGER;
        ALTER TABLE events ADD COLUMN length INTEGER;
        UPDATE meta SET value = '4' WHERE key = 'format_version';
        """);

    /// <summary>
    /// Format 4 lacks <c>roots.paths_root</c> (every root owned its path rows, so each session stored every path
    /// again) and <c>sessions.baseline_from</c> (every baseline stored every path's version again): add them, NULL
    /// for every row (each root keeps owning its paths, each session its whole baseline), and record format 5,
    /// inside the caller's transaction. The index <c>roots_by_session</c> comes with the DDL that follows.
    /// </summary>
    private static void MigrateFromFormat4(SqliteDatabase db) => Migrate(db, 4, """
        ALTER TABLE roots ADD COLUMN paths_root INTEGER;
        ALTER TABLE sessions ADD COLUMN baseline_from INTEGER;
        UPDATE meta SET value = '5' WHERE key = 'format_version';
        """);

    /// <summary>
    /// Format 5 has no groups (codecs 4 and 5) and no <c>meta.grouped_through_blob</c>: its blob rows are format-6
    /// rows as they are, and a missing mark means no blob was considered for a group yet. Only the number changes,
    /// inside the caller's transaction, so that a format-5 diffkeeper refuses the trace ("upgrade diffkeeper")
    /// instead of calling a later pass's slices damage.
    /// </summary>
    private static void MigrateFromFormat5(SqliteDatabase db) => Migrate(db, 5, """
        UPDATE meta SET value = '6' WHERE key = 'format_version';
        """);

    /// <summary>
    /// Format 6 has no <c>events.run</c> (write runs, docs/store-format.md): every row is one event, which is what a
    /// NULL <c>run</c> means. Add the column and record format 7, inside the caller's transaction, so that a format-6
    /// diffkeeper refuses the trace instead of showing each later run as its first write alone.
    /// </summary>
    private static void MigrateFromFormat6(SqliteDatabase db) => Migrate(db, 6, """
        ALTER TABLE events ADD COLUMN run BLOB;
        UPDATE meta SET value = '7' WHERE key = 'format_version';
        """);

    /// <summary>
    /// The sessions whose end state the baseline of <paramref name="sessionId"/> inherits, nearest first, following
    /// <c>sessions.baseline_from</c> of the database <paramref name="schema"/> (format 5; empty before it) to earlier
    /// sessions only, at most <paramref name="limit"/> of them.
    /// </summary>
    internal static List<long> BaselineChain(SqliteDatabase db, long sessionId, int limit, string schema = "main")
    {
        var chain = new List<long>();
        using (var column = db.Prepare($"SELECT count(*) FROM pragma_table_info('sessions', '{schema}') WHERE name = 'baseline_from'"))
        {
            if (column.ScalarInt64() != 1)
            {
                return chain;
            }
        }

        using var next = db.Prepare($"SELECT baseline_from FROM {schema}.sessions WHERE id = ?1");
        for (var at = sessionId; chain.Count < limit && next.Bind(1, at).ScalarInt64() is { } from && from < at && from >= 1; at = from)
        {
            chain.Add(from);
        }

        return chain;
    }

    /// <summary>Runs <paramref name="sql"/> when the catalog exists and is at format <paramref name="from"/>.</summary>
    private static void Migrate(SqliteDatabase db, int from, string sql)
    {
        using (var exists = db.Prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'"))
        {
            if (exists.ScalarInt64() == 0 || Version(db) != from)
            {
                return;
            }
        }

        db.Execute(sql);
    }

    /// <summary>Refuses a catalog written by a newer format (exit code 9) or one that is not a DiffKeeper catalog.</summary>
    internal static void Check(SqliteDatabase db, string catalogPath, bool allowMissing = false)
    {
        string? value = null;
        try
        {
            using var exists = db.Prepare("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'");
            if (exists.ScalarInt64() == 0)
            {
                if (allowMissing)
                {
                    return;
                }
            }
            else
            {
                using var cmd = db.Prepare("SELECT value FROM meta WHERE key = 'format_version'");
                if (cmd.Step())
                {
                    value = cmd.StringOrNull(0);
                }

                cmd.Reset();
            }
        }
        catch (CatalogException e) when (e.ErrorCode is 10 or 13)
        {
            // SQLITE_IOERR, SQLITE_FULL: the disk failed, not the catalog (it may open the next time).
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot read the catalog {catalogPath}: {e.Message}", e);
        }
        catch (CatalogException e) when ((e.ErrorCode & 0xFF) is 8 or 14)
        {
            // SQLITE_READONLY or SQLITE_CANTOPEN on the first read, the database file itself open: a catalog in WAL mode
            // whose -shm file this user cannot write or create (another user's reader left a -wal, or it needs a
            // recovery this user may not write): a permission, not damage. ErrorMessageTests' "show, unreadable pack",
            // run as nobody after root's commands, met the first at random; a -wal without its -shm in a directory
            // nobody may write gives the second (both exit 5, "not a DiffKeeper catalog", before).
            throw new DiffKeeperException(ExitCode.SystemError,
                $"cannot read the catalog {catalogPath}: {e.Message} (its -wal/-shm files or its directory are not writable by this user)", e);
        }
        catch (CatalogException e)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{catalogPath} is not a DiffKeeper catalog ({e.Message})", e);
        }

        if (!int.TryParse(value, out var version))
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{catalogPath} has no readable format version; it is not a DiffKeeper catalog or it is damaged");
        }

        if (version > FormatVersion)
        {
            throw new DiffKeeperException(ExitCode.UnsupportedFormat,
                $"{catalogPath} has store format {version}, newer than the {FormatVersion} this diffkeeper reads; upgrade diffkeeper");
        }

        CheckTables(db, catalogPath, version);
    }

    /// <summary>The columns every reader selects, per table (format 1 lacks the delta columns, format 2 versions.link, format 3 events.offset and events.length).</summary>
    private static readonly (string Table, string Columns, string Format2Columns)[] Tables =
    [
        ("sessions", "id, command, cwd, capture, started_wall_ns, ended_ns, exit_code, lost_events, host, state", ""),
        ("roots", "id, session_id, path", ""),
        ("paths", "id, root_id, rel", ""),
        ("events", "session_id, seq, time_ns, op, path_id, path2_id, size, pid, comm, detail", ""),
        ("versions", "id, session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content, target, extents", ", pruned"),
        ("blobs", "id, hash, pack_id, offset, raw_len, stored_len, codec", ", bases"),
        ("packs", "id, committed_size", ""),
    ];

    /// <summary>
    /// A catalog missing a table or a column is damaged (exit 5), not a failed query later (exit 10), and never a
    /// trace that reads as empty. Preparing a statement reads only the schema.
    /// </summary>
    private static void CheckTables(SqliteDatabase db, string catalogPath, int version)
    {
        foreach (var (table, columns, format2) in Tables)
        {
            try
            {
                using var probe = db.Prepare($"SELECT {columns}{(version >= 2 ? format2 : "")}{(version >= 3 && table == "versions" ? ", link" : "")}{(version >= 4 && table == "events" ? ", offset, length" : "")}{(version >= 7 && table == "events" ? ", run" : "")} FROM {table} LIMIT 0");
            }
            catch (CatalogException e)
            {
                throw new DiffKeeperException(ExitCode.Corrupt, $"{catalogPath} is damaged: its table {table} is missing or incomplete ({e.Message})", e);
            }
        }
    }
}
