using System.Runtime.InteropServices;
using DiffKeeper.Core;
using SQLitePCL;

namespace DiffKeeper.Storage.Catalog;

/// <summary>A SQLite call failed. <see cref="ErrorCode"/> is SQLite's primary result code (11 corrupt, 26 not a database).</summary>
public sealed class CatalogException(int errorCode, string message) : Exception(message)
{
    public int ErrorCode { get; } = errorCode;
}

/// <summary>
/// One SQLite connection through SQLitePCLRaw directly. Microsoft.Data.Sqlite cost ~28 ms per process before the
/// first query (connection-string parsing and static initialization) and 2–3× the insert itself per row on the
/// recorder's hot path; this thin layer costs neither. Not thread-safe.
/// </summary>
internal sealed class SqliteDatabase : IDisposable
{
    private static readonly Lazy<bool> Initialized = new(() =>
    {
        // The system SQLite (Debian's libsqlite3-0): the provider asks for "sqlite3", which only the -dev package's
        // unversioned symlink would satisfy, so the resolver names the runtime library itself.
        NativeLibrary.SetDllImportResolver(typeof(SQLite3Provider_sqlite3).Assembly, static (name, _, _) =>
            name == "sqlite3" ? NativeLibrary.Load("libsqlite3.so.0") : IntPtr.Zero);
        raw.SetProvider(new SQLite3Provider_sqlite3());
        return true;
    });

    private readonly sqlite3 _db;

    private SqliteDatabase(sqlite3 db) => _db = db;

    public static SqliteDatabase Open(string path, bool readOnly)
    {
        _ = Initialized.Value;
        var flags = readOnly ? raw.SQLITE_OPEN_READONLY : raw.SQLITE_OPEN_READWRITE | raw.SQLITE_OPEN_CREATE;
        var rc = raw.sqlite3_open_v2(path, out var db, flags | raw.SQLITE_OPEN_NOMUTEX, null);
        if (rc != raw.SQLITE_OK)
        {
            var message = db is null ? raw.sqlite3_errstr(rc).utf8_to_string() : raw.sqlite3_errmsg(db).utf8_to_string();
            db?.Dispose();
            throw new CatalogException(rc, $"cannot open {path}: {message}");
        }

        var database = new SqliteDatabase(db);
        raw.sqlite3_busy_timeout(db, 30_000);
        if (!readOnly)
        {
            database.Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
        }

        return database;
    }

    /// <summary>
    /// Opens <paramref name="path"/> for writing (never creating it, no pragma, no waiting for a lock) and closes it at
    /// once: closed as the only connection, SQLite checkpoints the empty WAL and removes the <c>-wal</c> and <c>-shm</c>
    /// files, which a read-only connection cannot (TraceReader.RemoveSidecars).
    /// </summary>
    public static void OpenAndCloseToRemoveSidecars(string path)
    {
        _ = Initialized.Value;
        var rc = raw.sqlite3_open_v2(path, out var db, raw.SQLITE_OPEN_READWRITE | raw.SQLITE_OPEN_NOMUTEX, null);
        if (rc == raw.SQLITE_OK)
        {
            // A connection opens the WAL only when it first reads; one that never read leaves the files at its close.
            rc = raw.sqlite3_exec(db, "SELECT count(*) FROM sqlite_master", null, null, out _);
        }

        db?.Dispose();
        if (rc != raw.SQLITE_OK)
        {
            throw new CatalogException(rc, $"cannot open {path}");
        }
    }

    /// <summary>
    /// Creates a new database file with a rollback journal and full sync (a catalog is built this way under a
    /// temporary name, so everything it holds is in the one file when it is renamed into place).
    /// </summary>
    public static SqliteDatabase Create(string path)
    {
        _ = Initialized.Value;
        var rc = raw.sqlite3_open_v2(path, out var db, raw.SQLITE_OPEN_READWRITE | raw.SQLITE_OPEN_CREATE | raw.SQLITE_OPEN_NOMUTEX, null);
        if (rc != raw.SQLITE_OK)
        {
            var message = db is null ? raw.sqlite3_errstr(rc).utf8_to_string() : raw.sqlite3_errmsg(db).utf8_to_string();
            db?.Dispose();
            throw new CatalogException(rc, $"cannot create {path}: {message}");
        }

        var database = new SqliteDatabase(db);
        database.Execute("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;");
        return database;
    }

    public void Execute(string sql)
    {
        var rc = raw.sqlite3_exec(_db, sql, null, null, out var error);
        if (rc != raw.SQLITE_OK)
        {
            throw new CatalogException(rc, error ?? raw.sqlite3_errmsg(_db).utf8_to_string());
        }
    }

    public SqliteStatement Prepare(string sql)
    {
        var rc = raw.sqlite3_prepare_v2(_db, sql, out var stmt);
        if (rc != raw.SQLITE_OK)
        {
            throw Fail(rc);
        }

        return new SqliteStatement(this, stmt);
    }

    public long LastInsertRowId => raw.sqlite3_last_insert_rowid(_db);

    /// <summary>
    /// Whether a transaction is open. SQLite ends one by itself when a write fails in some ways (SQLITE_FULL,
    /// SQLITE_IOERR, a failed COMMIT): the statements after that would each commit on their own.
    /// </summary>
    public bool InTransaction => raw.sqlite3_get_autocommit(_db) == 0;

    /// <summary>Rows the last INSERT, UPDATE or DELETE changed (a compare-and-set update checks it).</summary>
    public int Changes => raw.sqlite3_changes(_db);

    internal CatalogException Fail(int rc) => new(rc & 0xFF, raw.sqlite3_errmsg(_db).utf8_to_string());

    public void Dispose() => raw.sqlite3_close_v2(_db);
}

/// <summary>A prepared statement; parameters and columns are numbered as SQLite numbers them (parameters from 1).</summary>
internal sealed class SqliteStatement : IDisposable
{
    private readonly SqliteDatabase _db;
    private readonly sqlite3_stmt _stmt;

    public SqliteStatement(SqliteDatabase db, sqlite3_stmt stmt)
    {
        _db = db;
        _stmt = stmt;
    }

    public SqliteStatement Bind(int index, long value) => Check(raw.sqlite3_bind_int64(_stmt, index, value));

    public SqliteStatement Bind(int index, long? value) => value is { } v ? Bind(index, v) : BindNull(index);

    public SqliteStatement Bind(int index, string? value) => value is null ? BindNull(index) : Check(raw.sqlite3_bind_text(_stmt, index, value));

    public SqliteStatement Bind(int index, byte[]? value) => value is null ? BindNull(index) : Check(raw.sqlite3_bind_blob(_stmt, index, value));

    /// <summary>Binds bytes as a BLOB (SQLite copies them): a blob id's bytes without a copy of its array per row.</summary>
    public SqliteStatement BindBlob(int index, ReadOnlySpan<byte> value) => Check(raw.sqlite3_bind_blob(_stmt, index, value));

    /// <summary>
    /// Binds a path (paths.rel, roots.path, versions.target): TEXT when it is UTF-8, as every path was before, and
    /// its exact bytes as a BLOB when it holds bytes that are not (docs/store-format.md, "Paths"). Read it back
    /// with <see cref="Path"/>.
    /// </summary>
    public SqliteStatement BindPath(int index, string? value) =>
        value is null ? BindNull(index)
        : PathBytes.HasRawBytes(value) ? Check(raw.sqlite3_bind_blob(_stmt, index, PathBytes.Encode(value)))
        : Check(raw.sqlite3_bind_text(_stmt, index, value));

    public SqliteStatement BindNull(int index) => Check(raw.sqlite3_bind_null(_stmt, index));

    /// <summary>Advances to the next row; false when there is none (the statement is then reset for reuse).</summary>
    public bool Step()
    {
        var rc = raw.sqlite3_step(_stmt);
        if (rc == raw.SQLITE_ROW)
        {
            return true;
        }

        raw.sqlite3_reset(_stmt);
        if (rc != raw.SQLITE_DONE)
        {
            throw _db.Fail(rc);
        }

        return false;
    }

    /// <summary>Runs a statement that returns no rows (or ignores them) and resets it for reuse.</summary>
    public void Run()
    {
        while (Step())
        {
        }
    }

    /// <summary>The first column of the first row, or null; the statement is reset afterwards.</summary>
    public long? ScalarInt64()
    {
        long? value = Step() && !IsNull(0) ? Int64(0) : null;
        Reset();
        return value;
    }

    public void Reset()
    {
        raw.sqlite3_reset(_stmt);
        raw.sqlite3_clear_bindings(_stmt);
    }

    public bool IsNull(int column) => raw.sqlite3_column_type(_stmt, column) == raw.SQLITE_NULL;

    public long Int64(int column) => raw.sqlite3_column_int64(_stmt, column);

    public int Int32(int column) => raw.sqlite3_column_int(_stmt, column);

    public string String(int column) => raw.sqlite3_column_text(_stmt, column).utf8_to_string();

    public string? StringOrNull(int column) => IsNull(column) ? null : String(column);

    /// <summary>A path column, TEXT or BLOB, as its exact bytes decoded by <see cref="PathBytes.Decode"/>.</summary>
    public string Path(int column) => PathBytes.Decode(raw.sqlite3_column_blob(_stmt, column));

    public string? PathOrNull(int column) => IsNull(column) ? null : Path(column);

    public long? Int64OrNull(int column) => IsNull(column) ? null : Int64(column);

    public byte[]? BlobOrNull(int column) => IsNull(column) ? null : raw.sqlite3_column_blob(_stmt, column).ToArray();

    /// <summary>A BLOB column's bytes in place (empty for NULL), valid until the next step, reset or column call.</summary>
    public ReadOnlySpan<byte> BlobSpan(int column) => raw.sqlite3_column_blob(_stmt, column);

    private SqliteStatement Check(int rc) => rc == raw.SQLITE_OK ? this : throw _db.Fail(rc);

    public void Dispose() => raw.sqlite3_finalize(_stmt);
}
