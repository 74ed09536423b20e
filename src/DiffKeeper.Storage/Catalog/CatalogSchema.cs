using DiffKeeper.Core;
using Microsoft.Data.Sqlite;

namespace DiffKeeper.Storage.Catalog;

/// <summary>The catalog's DDL and format check (docs/store-format.md, "Catalog").</summary>
public static class CatalogSchema
{
    public const int FormatVersion = 1;

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
            state TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS roots(id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, path TEXT NOT NULL);
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
            extents BLOB);
        CREATE INDEX IF NOT EXISTS versions_by_session ON versions(session_id, seq);
        CREATE INDEX IF NOT EXISTS versions_by_path ON versions(path_id, seq);
        CREATE TABLE IF NOT EXISTS blobs(
            id INTEGER PRIMARY KEY,
            hash BLOB NOT NULL UNIQUE,
            pack_id INTEGER NOT NULL,
            offset INTEGER NOT NULL,
            raw_len INTEGER NOT NULL,
            stored_len INTEGER NOT NULL,
            codec INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS packs(id INTEGER PRIMARY KEY, committed_size INTEGER NOT NULL);
        """;

    /// <summary>Creates the tables of a new catalog, or checks the format of an existing one.</summary>
    public static void CreateOrCheck(SqliteConnection connection, string catalogPath)
    {
        using var tx = connection.BeginTransaction();
        using (var cmd = connection.CreateCommand())
        {
            cmd.Transaction = tx;
            cmd.CommandText = Ddl;
            cmd.ExecuteNonQuery();
            cmd.CommandText = "INSERT OR IGNORE INTO meta(key, value) VALUES ('format_version', $v), ('created_by', $by)";
            cmd.Parameters.AddWithValue("$v", FormatVersion.ToString(System.Globalization.CultureInfo.InvariantCulture));
            cmd.Parameters.AddWithValue("$by", "diffkeeper " + typeof(CatalogSchema).Assembly.GetName().Version);
            cmd.ExecuteNonQuery();
        }

        tx.Commit();
        Check(connection, catalogPath);
    }

    /// <summary>Refuses a catalog written by a newer format (exit code 9) or one that is not a DiffKeeper catalog.</summary>
    public static void Check(SqliteConnection connection, string catalogPath)
    {
        string? value;
        try
        {
            using var cmd = connection.CreateCommand();
            cmd.CommandText = "SELECT value FROM meta WHERE key = 'format_version'";
            value = cmd.ExecuteScalar() as string;
        }
        catch (SqliteException e)
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
    }
}
