using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// The system SQLite (Debian's libsqlite3-0, <c>libsqlite3.so.0</c>): the calls the catalog makes, nothing more. Handles
/// are plain pointers here; <c>DiffKeeper.Storage.Catalog.SqliteDatabase</c> owns them (one connection, used by one thread
/// at a time) and is the only caller. The calls marked <see cref="SuppressGCTransitionAttribute"/> only read or write
/// the connection's or statement's own memory (no I/O, no lock, no callback): they skip the GC mode switch.
/// </summary>
public static unsafe partial class LibSqlite3
{
    private const string Lib = "libsqlite3.so.0";

    public const int SQLITE_OK = 0;
    public const int SQLITE_ROW = 100;
    public const int SQLITE_DONE = 101;
    public const int SQLITE_NULL = 5;
    public const int SQLITE_OPEN_READONLY = 0x1;
    public const int SQLITE_OPEN_READWRITE = 0x2;
    public const int SQLITE_OPEN_CREATE = 0x4;
    public const int SQLITE_OPEN_NOMUTEX = 0x8000;

    /// <summary>SQLITE_TRANSIENT: SQLite copies a bound value before the call returns.</summary>
    public static readonly nint Transient = -1;

    public const int SQLITE_CONFIG_MEMSTATUS = 9;

    /// <summary>
    /// <c>sqlite3_config(op, int)</c>, before the library's first use (SQLITE_MISUSE after it). The C function is
    /// variadic; on x86-64 and AArch64 Linux integer arguments pass as they do to a fixed-argument function.
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "sqlite3_config")]
    public static partial int ConfigInt(int op, int value);

    public const int SQLITE_CONFIG_PAGECACHE = 7;

    /// <summary><c>sqlite3_config(SQLITE_CONFIG_PAGECACHE, void *memory, int size, int count)</c>, as <see cref="ConfigInt"/>.</summary>
    [LibraryImport(Lib, EntryPoint = "sqlite3_config")]
    public static partial int ConfigPageCache(int op, nint memory, int size, int count);

    [LibraryImport(Lib, EntryPoint = "sqlite3_open_v2", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int OpenV2(string filename, out nint db, int flags, nint vfs);

    [LibraryImport(Lib, EntryPoint = "sqlite3_close_v2")]
    public static partial int CloseV2(nint db);

    [LibraryImport(Lib, EntryPoint = "sqlite3_errmsg")]
    public static partial byte* ErrMsg(nint db);

    [LibraryImport(Lib, EntryPoint = "sqlite3_errstr")]
    public static partial byte* ErrStr(int rc);

    [LibraryImport(Lib, EntryPoint = "sqlite3_busy_timeout")]
    public static partial int BusyTimeout(nint db, int ms);

    [LibraryImport(Lib, EntryPoint = "sqlite3_exec", StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Exec(nint db, string sql, nint callback, nint arg, out byte* errmsg);

    [LibraryImport(Lib, EntryPoint = "sqlite3_free")]
    public static partial void Free(void* p);

    [LibraryImport(Lib, EntryPoint = "sqlite3_prepare_v2")]
    public static partial int PrepareV2(nint db, byte* sql, int nByte, out nint stmt, out byte* tail);

    [LibraryImport(Lib, EntryPoint = "sqlite3_finalize")]
    public static partial int Finalize(nint stmt);

    [LibraryImport(Lib, EntryPoint = "sqlite3_last_insert_rowid")]
    [SuppressGCTransition]
    public static partial long LastInsertRowId(nint db);

    [LibraryImport(Lib, EntryPoint = "sqlite3_get_autocommit")]
    [SuppressGCTransition]
    public static partial int GetAutocommit(nint db);

    [LibraryImport(Lib, EntryPoint = "sqlite3_changes")]
    [SuppressGCTransition]
    public static partial int Changes(nint db);

    [LibraryImport(Lib, EntryPoint = "sqlite3_bind_int64")]
    [SuppressGCTransition]
    public static partial int BindInt64(nint stmt, int index, long value);

    [LibraryImport(Lib, EntryPoint = "sqlite3_bind_null")]
    [SuppressGCTransition]
    public static partial int BindNull(nint stmt, int index);

    [LibraryImport(Lib, EntryPoint = "sqlite3_bind_text")]
    public static partial int BindText(nint stmt, int index, byte* value, int length, nint destructor);

    [LibraryImport(Lib, EntryPoint = "sqlite3_bind_blob")]
    public static partial int BindBlob(nint stmt, int index, byte* value, int length, nint destructor);

    [LibraryImport(Lib, EntryPoint = "sqlite3_step")]
    public static partial int Step(nint stmt);

    [LibraryImport(Lib, EntryPoint = "sqlite3_reset")]
    public static partial int Reset(nint stmt);

    [LibraryImport(Lib, EntryPoint = "sqlite3_clear_bindings")]
    public static partial int ClearBindings(nint stmt);

    [LibraryImport(Lib, EntryPoint = "sqlite3_column_type")]
    [SuppressGCTransition]
    public static partial int ColumnType(nint stmt, int column);

    [LibraryImport(Lib, EntryPoint = "sqlite3_column_int64")]
    [SuppressGCTransition]
    public static partial long ColumnInt64(nint stmt, int column);

    [LibraryImport(Lib, EntryPoint = "sqlite3_column_int")]
    [SuppressGCTransition]
    public static partial int ColumnInt(nint stmt, int column);

    /// <summary>A column as UTF-8 text; converting a BLOB or number allocates, so this one keeps the GC transition.</summary>
    [LibraryImport(Lib, EntryPoint = "sqlite3_column_text")]
    public static partial byte* ColumnText(nint stmt, int column);

    [LibraryImport(Lib, EntryPoint = "sqlite3_column_blob")]
    public static partial byte* ColumnBlob(nint stmt, int column);

    [LibraryImport(Lib, EntryPoint = "sqlite3_column_bytes")]
    public static partial int ColumnBytes(nint stmt, int column);

    /// <summary>A NUL-terminated UTF-8 string SQLite owns, as a string (null for a null pointer).</summary>
    public static string? Utf8(byte* p) => p is null ? null : Marshal.PtrToStringUTF8((nint)p);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ReadOnlySpan<byte> Span(byte* p, int length) => p is null ? default : new ReadOnlySpan<byte>(p, length);
}
