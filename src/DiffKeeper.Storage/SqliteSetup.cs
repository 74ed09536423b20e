using Microsoft.Data.Sqlite;

namespace DiffKeeper.Storage;

/// <summary>Opens catalog connections with the settings the format requires.</summary>
internal static class SqliteSetup
{
    private static readonly Lazy<bool> Initialized = new(() =>
    {
        SQLitePCL.Batteries_V2.Init();
        return true;
    });

    public static SqliteConnection Open(string catalogPath, bool readOnly)
    {
        _ = Initialized.Value;
        var builder = new SqliteConnectionStringBuilder
        {
            DataSource = catalogPath,
            Mode = readOnly ? SqliteOpenMode.ReadOnly : SqliteOpenMode.ReadWriteCreate,
            Pooling = false,
            DefaultTimeout = 30,
        };
        var connection = new SqliteConnection(builder.ToString());
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = readOnly
            ? "PRAGMA busy_timeout=30000;"
            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;";
        cmd.ExecuteNonQuery();
        return connection;
    }
}
