using System.Runtime.InteropServices;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Storage.Catalog;

/// <summary>A SQLite call failed. <see cref="ErrorCode"/> is SQLite's primary result code (11 corrupt, 26 not a database).</summary>
public sealed class CatalogException(int errorCode, string message) : Exception(message)
{
    public int ErrorCode { get; } = errorCode;
}

/// <summary>
/// One SQLite connection to the system library (<see cref="LibSqlite3"/>). Microsoft.Data.Sqlite cost ~28 ms per
/// process before the first query and 2–3× the insert itself per row on the recorder's hot path; SQLitePCLRaw, used
/// after it, still went through a provider interface, a SafeHandle add/release around every call and a UTF-8 array per
/// bound string (~4.5 % of the recorder thread's CPU on 20,000 creates; docs/benchmarks.md, branch <c>creates2</c>).
/// Here the connection and its statements are released by SafeHandles (at Dispose, or by the finalizer when an owner
/// forgot) and every call passes the plain pointer they hold: an owner uses a connection from one thread at a time and
/// disposes its statements before it. Not thread-safe.
/// </summary>
internal sealed unsafe class SqliteDatabase : IDisposable
{
    // Debian's library is built with memory statistics on and without lookaside: every sqlite3_malloc and free (several
    // per inserted row) took the global memory mutex to count bytes nobody reads (~3 % of the recorder thread's samples
    // on 20,000 creates were pthread mutex calls from SQLite; docs/benchmarks.md, branch creates2).
    // And every connection's page cache began with a bulk of 20 cache lines (Debian's SQLITE_DEFAULT_PCACHE_INITSZ)
    // whose headers it wrote at its first query, a page fault per line, before anything was read (the connections of a
    // W1 `record`: ~200 of its ~2,270 faults). Without it, a cache line is allocated when a page is first read into it.
    private static readonly int Configured = LibSqlite3.ConfigInt(LibSqlite3.SQLITE_CONFIG_MEMSTATUS, 0)
        | LibSqlite3.ConfigPageCache(LibSqlite3.SQLITE_CONFIG_PAGECACHE, 0, 0, 0);

    private readonly ConnectionHandle _handle;
    private readonly nint _db;

    private SqliteDatabase(ConnectionHandle handle)
    {
        _handle = handle;
        _db = handle.DangerousGetHandle();
    }

    private static ConnectionHandle OpenHandle(string path, int flags, string verb)
    {
        _ = Configured;
        var rc = LibSqlite3.OpenV2(path, out var db, flags, 0);
        var handle = new ConnectionHandle(db);
        if (rc != LibSqlite3.SQLITE_OK)
        {
            var message = db == 0 ? LibSqlite3.Utf8(LibSqlite3.ErrStr(rc)) : LibSqlite3.Utf8(LibSqlite3.ErrMsg(db));
            handle.Dispose();
            throw new CatalogException(rc, $"cannot {verb} {path}: {message}");
        }

        return handle;
    }

    public static SqliteDatabase Open(string path, bool readOnly)
    {
        var flags = readOnly ? LibSqlite3.SQLITE_OPEN_READONLY : LibSqlite3.SQLITE_OPEN_READWRITE | LibSqlite3.SQLITE_OPEN_CREATE;
        var database = new SqliteDatabase(OpenHandle(path, flags | LibSqlite3.SQLITE_OPEN_NOMUTEX, "open"));
        LibSqlite3.BusyTimeout(database._db, 30_000);
        if (!readOnly)
        {
            database.Execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
        }

        return database;
    }

    /// <summary>
    /// Opens <paramref name="path"/> (never creating it) to read it on a connection that may write, with
    /// <c>query_only</c> on so that no statement of it writes: closed as the only connection, SQLite checkpoints the
    /// empty WAL and removes the <c>-wal</c> and <c>-shm</c> itself, which a read-only connection cannot (the second
    /// connection <see cref="OpenAndCloseToRemoveSidecars"/> opens for that). Where this user may not write the file,
    /// SQLite opens it read-only, as <see cref="Open"/> would. Not beside a writer of the same database in this process
    /// (a reader that may write there failed with "disk I/O error").
    /// </summary>
    public static SqliteDatabase OpenToReadAndTidy(string path)
    {
        var database = new SqliteDatabase(OpenHandle(path, LibSqlite3.SQLITE_OPEN_READWRITE | LibSqlite3.SQLITE_OPEN_NOMUTEX, "open"));
        try
        {
            LibSqlite3.BusyTimeout(database._db, 30_000);
            database.Execute("PRAGMA query_only=1");
        }
        catch
        {
            database.Dispose(); // not left to the finalizer
            throw;
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
        _ = Configured;
        var rc = LibSqlite3.OpenV2(path, out var db, LibSqlite3.SQLITE_OPEN_READWRITE | LibSqlite3.SQLITE_OPEN_NOMUTEX, 0);
        using var handle = new ConnectionHandle(db);
        if (rc == LibSqlite3.SQLITE_OK)
        {
            // A connection opens the WAL only when it first reads; one that never read leaves the files at its close.
            rc = LibSqlite3.Exec(db, "SELECT count(*) FROM sqlite_master", 0, 0, out var error);
            LibSqlite3.Free(error);
        }

        handle.Dispose();
        if (rc != LibSqlite3.SQLITE_OK)
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
        var database = new SqliteDatabase(OpenHandle(path,
            LibSqlite3.SQLITE_OPEN_READWRITE | LibSqlite3.SQLITE_OPEN_CREATE | LibSqlite3.SQLITE_OPEN_NOMUTEX, "create"));
        database.Execute("PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;");
        return database;
    }

    public void Execute(string sql)
    {
        var rc = LibSqlite3.Exec(_db, sql, 0, 0, out var error);
        if (rc != LibSqlite3.SQLITE_OK)
        {
            var message = error is not null ? LibSqlite3.Utf8(error) : Message;
            LibSqlite3.Free(error);
            throw new CatalogException(rc, message ?? "");
        }

        LibSqlite3.Free(error);
        GC.KeepAlive(this);
    }

    public SqliteStatement Prepare(string sql)
    {
        var bytes = Encoding.UTF8.GetBytes(sql + "\0");
        int rc;
        nint stmt;
        fixed (byte* p = bytes)
        {
            rc = LibSqlite3.PrepareV2(_db, p, bytes.Length, out stmt, out _);
        }

        if (rc != LibSqlite3.SQLITE_OK)
        {
            LibSqlite3.Finalize(stmt);
            throw Fail(rc);
        }

        return new SqliteStatement(this, new StatementHandle(stmt));
    }

    public long LastInsertRowId => LibSqlite3.LastInsertRowId(_db);

    /// <summary>
    /// Whether a transaction is open. SQLite ends one by itself when a write fails in some ways (SQLITE_FULL,
    /// SQLITE_IOERR, a failed COMMIT): the statements after that would each commit on their own.
    /// </summary>
    public bool InTransaction => LibSqlite3.GetAutocommit(_db) == 0;

    /// <summary>Rows the last INSERT, UPDATE or DELETE changed (a compare-and-set update checks it).</summary>
    public int Changes => LibSqlite3.Changes(_db);

    private string Message => LibSqlite3.Utf8(LibSqlite3.ErrMsg(_db)) ?? "";

    internal CatalogException Fail(int rc) => new(rc & 0xFF, Message);

    public void Dispose() => _handle.Dispose();

    /// <summary>Owns a connection: closed once (<c>sqlite3_close_v2</c>, which waits for statements still open).</summary>
    private sealed class ConnectionHandle : SafeHandle
    {
        public ConnectionHandle(nint db)
            : base(0, ownsHandle: true) => SetHandle(db);

        public override bool IsInvalid => handle == 0;

        protected override bool ReleaseHandle() => LibSqlite3.CloseV2(handle) == LibSqlite3.SQLITE_OK;
    }
}

/// <summary>Owns a prepared statement: finalized once.</summary>
internal sealed class StatementHandle : SafeHandle
{
    public StatementHandle(nint stmt)
        : base(0, ownsHandle: true) => SetHandle(stmt);

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        LibSqlite3.Finalize(handle);
        return true;
    }
}

/// <summary>A prepared statement; parameters and columns are numbered as SQLite numbers them (parameters from 1).</summary>
internal sealed unsafe class SqliteStatement : IDisposable
{
    // A non-null pointer for empty values: SQLite binds NULL for a null pointer, an empty BLOB or TEXT for this.
    private static readonly byte* Empty = (byte*)NativeMemory.AllocZeroed(1);

    private readonly SqliteDatabase _db;
    private readonly StatementHandle _handle;
    private readonly nint _stmt;

    public SqliteStatement(SqliteDatabase db, StatementHandle handle)
    {
        _db = db;
        _handle = handle;
        _stmt = handle.DangerousGetHandle();
    }

    public SqliteStatement Bind(int index, long value) => Check(LibSqlite3.BindInt64(_stmt, index, value));

    public SqliteStatement Bind(int index, long? value) => value is { } v ? Bind(index, v) : BindNull(index);

    /// <summary>Binds a string as UTF-8 TEXT, up to its first NUL character (as SQLitePCLRaw's binding did).</summary>
    public SqliteStatement Bind(int index, string? value)
    {
        if (value is null)
        {
            return BindNull(index);
        }

        var cut = value.IndexOf('\0');
        var text = cut < 0 ? value.AsSpan() : value.AsSpan(0, cut);
        var max = Encoding.UTF8.GetMaxByteCount(text.Length);
        var rented = max > 512 ? System.Buffers.ArrayPool<byte>.Shared.Rent(max) : null;
        try
        {
            Span<byte> buffer = rented is null ? stackalloc byte[max] : rented;
            var length = Encoding.UTF8.GetBytes(text, buffer);
            return BindText(index, buffer[..length]);
        }
        finally
        {
            if (rented is not null)
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
            }
        }
    }

    public SqliteStatement Bind(int index, byte[]? value) => value is null ? BindNull(index) : BindBlob(index, value);

    /// <summary>Binds bytes as a BLOB (SQLite copies them): a blob id's bytes without a copy of its array per row.</summary>
    public SqliteStatement BindBlob(int index, ReadOnlySpan<byte> value)
    {
        fixed (byte* p = value)
        {
            return Check(LibSqlite3.BindBlob(_stmt, index, value.IsEmpty ? Empty : p, value.Length, LibSqlite3.Transient));
        }
    }

    private SqliteStatement BindText(int index, ReadOnlySpan<byte> utf8)
    {
        fixed (byte* p = utf8)
        {
            return Check(LibSqlite3.BindText(_stmt, index, utf8.IsEmpty ? Empty : p, utf8.Length, LibSqlite3.Transient));
        }
    }

    /// <summary>
    /// Binds a path (paths.rel, roots.path, versions.target): TEXT when it is UTF-8, as every path was before, and
    /// its exact bytes as a BLOB when it holds bytes that are not (docs/store-format.md, "Paths"). Read it back
    /// with <see cref="Path"/>.
    /// </summary>
    public SqliteStatement BindPath(int index, string? value) =>
        value is null ? BindNull(index)
        : PathBytes.HasRawBytes(value) ? BindBlob(index, PathBytes.Encode(value))
        : Bind(index, value);

    public SqliteStatement BindNull(int index) => Check(LibSqlite3.BindNull(_stmt, index));

    /// <summary>Advances to the next row; false when there is none (the statement is then reset for reuse).</summary>
    public bool Step()
    {
        var rc = LibSqlite3.Step(_stmt);
        if (rc == LibSqlite3.SQLITE_ROW)
        {
            GC.KeepAlive(this);
            return true;
        }

        LibSqlite3.Reset(_stmt);
        GC.KeepAlive(this);
        if (rc != LibSqlite3.SQLITE_DONE)
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
        LibSqlite3.Reset(_stmt);
        LibSqlite3.ClearBindings(_stmt);
        GC.KeepAlive(this);
    }

    public bool IsNull(int column) => Kept(LibSqlite3.ColumnType(_stmt, column) == LibSqlite3.SQLITE_NULL);

    public long Int64(int column) => Kept(LibSqlite3.ColumnInt64(_stmt, column));

    public int Int32(int column) => Kept(LibSqlite3.ColumnInt(_stmt, column));

    public string String(int column) => Kept(LibSqlite3.Utf8(LibSqlite3.ColumnText(_stmt, column))!);

    public string? StringOrNull(int column) => IsNull(column) ? null : String(column);

    /// <summary>A path column, TEXT or BLOB, as its exact bytes decoded by <see cref="PathBytes.Decode"/>.</summary>
    public string Path(int column) => Kept(PathBytes.Decode(Blob(column)));

    public string? PathOrNull(int column) => IsNull(column) ? null : Path(column);

    public long? Int64OrNull(int column) => IsNull(column) ? null : Int64(column);

    public byte[]? BlobOrNull(int column) => IsNull(column) ? null : Kept(Blob(column).ToArray());

    /// <summary>A BLOB column's bytes in place (empty for NULL), valid until the next step, reset or column call.</summary>
    public ReadOnlySpan<byte> BlobSpan(int column) => Blob(column);

    // Valid until the next step, reset or column call on this statement (SQLite owns the bytes).
    private ReadOnlySpan<byte> Blob(int column)
    {
        var p = LibSqlite3.ColumnBlob(_stmt, column);
        return LibSqlite3.Span(p, LibSqlite3.ColumnBytes(_stmt, column));
    }

    // The statement stays reachable until a call that used its pointer has returned (its finalizer would free it).
    private T Kept<T>(T value)
    {
        GC.KeepAlive(this);
        return value;
    }

    private SqliteStatement Check(int rc) => rc == LibSqlite3.SQLITE_OK ? Kept(this) : throw _db.Fail(rc);

    public void Dispose() => _handle.Dispose();
}
