using System.Globalization;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Catalog;

/// <summary>
/// The domain of every catalog column (docs/store-format.md, "Validation"), in one place. A trace is untrusted
/// input: each rule is an SQL condition over one row, and both sides use the same text. Readers select
/// <see cref="Broken"/> beside the columns they read and refuse a row that breaks a rule before using any value of
/// it (<see cref="Throw"/>, exit 5); <c>verify</c> scans every table for rows that break one (<see cref="Scan"/>).
/// SQLite stores any type in any column, so every integer rule starts with <c>typeof(...) = 'integer'</c>.
/// </summary>
public static class CatalogDomain
{
    /// <summary>Largest file size a version may claim (1 PiB): far above what a recording stores, far below what overflows an offset.</summary>
    public const long MaxFileSize = 1L << 50;

    /// <summary>Largest byte offset or committed size of a pack (1 TiB; a writer rolls to a new pack after 1 GiB).</summary>
    public const long MaxPackSize = 1L << 40;

    private static readonly int MaxStored = Zstd.CompressBound(PackFormat.MaxRawLength);
    private static readonly int MaxGroupStored = Zstd.CompressBound(PackFormat.MaxGroupLength);

    // The rules are joined with string.Concat, not interpolated: an interpolated string rents its buffer from the shared
    // array pool, and this class constructor, which every command that opens a catalog runs, returned so many that the
    // pool made its per-core lists and ran the runtime's timing loop for the processor number (ProcessorIdCache), ~0.5 ms
    // of a materialization (docs/benchmarks.md, "mat17").
    private static string Int(string c) => "typeof(" + c + ") = 'integer'";

    private static string Number(long n) => n.ToString(CultureInfo.InvariantCulture);

    private static string IntIn(string c, long min, long max) =>
        string.Concat(Int(c), " AND ", c, " BETWEEN " + Number(min) + " AND ", Number(max));

    private static string OrNull(string c, string rule) => "(" + c + " IS NULL OR (" + rule + "))";

    private static string Text(string c) => "typeof(" + c + ") = 'text'";

    /// <summary>A path column: TEXT when its bytes are UTF-8, else a BLOB of its bytes (docs/store-format.md, "Paths").</summary>
    private static string PathValue(string c) => "typeof(" + c + ") IN ('text', 'blob')";

    /// <summary>Per table: (column, rule over the row with columns prefixed by {0}, what the rule says in words).</summary>
    private static readonly Dictionary<string, (string Column, string Rule, string Words)[]> Rules = new()
    {
        ["sessions"] =
        [
            ("id", Int("{0}id") + " AND {0}id >= 1", "an integer >= 1"),
            ("command", Text("{0}command"), "text"),
            ("cwd", Text("{0}cwd"), "text"),
            ("capture", Text("{0}capture"), "text"),
            ("started_wall_ns", Int("{0}started_wall_ns"), "an integer"),
            ("ended_ns", OrNull("{0}ended_ns", IntIn("{0}ended_ns", 0, long.MaxValue)), "NULL or an integer >= 0"),
            ("exit_code", OrNull("{0}exit_code", IntIn("{0}exit_code", 0, 255)), "NULL or an integer 0 to 255"),
            ("lost_events", IntIn("{0}lost_events", 0, long.MaxValue), "an integer >= 0"),
            ("host", OrNull("{0}host", Text("{0}host")), "NULL or text"),
            ("state", "{0}state IN ('recording', 'finished', 'interrupted')", "recording, finished or interrupted"),
            ("baseline_from", OrNull("{0}baseline_from", Int("{0}baseline_from") + " AND {0}baseline_from BETWEEN 1 AND {0}id - 1"), "NULL or an earlier session"),
        ],
        ["roots"] =
        [
            ("id", Int("{0}id"), "an integer"),
            ("session_id", Int("{0}session_id"), "an integer"),
            ("path", PathValue("{0}path") + " AND hex(substr({0}path, 1, 1)) = '2F'", "an absolute path"),
            ("paths_root", OrNull("{0}paths_root", Int("{0}paths_root") + " AND EXISTS(SELECT 1 FROM roots o WHERE o.id = {0}paths_root AND o.id < {0}id AND o.paths_root IS NULL AND o.path IS {0}path)"),
                "NULL or an earlier root of the same directory that owns its paths"),
        ],
        ["paths"] =
        [
            ("id", Int("{0}id"), "an integer"),
            ("root_id", Int("{0}root_id"), "an integer"),
            ("rel", PathValue("{0}rel"), "a path, text or bytes (a safe relative path, checked by TracePath)"),
        ],
        ["events"] =
        [
            ("session_id", Int("{0}session_id"), "an integer"),
            ("seq", IntIn("{0}seq", 1, long.MaxValue), "an integer >= 1"),
            ("time_ns", Int("{0}time_ns"), "an integer"),
            ("op", IntIn("{0}op", 1, 11), "an operation number 1 to 11"),
            ("path_id", OrNull("{0}path_id", Int("{0}path_id")), "NULL or an integer"),
            ("path2_id", OrNull("{0}path2_id", Int("{0}path2_id")), "NULL or an integer"),
            ("size", OrNull("{0}size", Int("{0}size")), "NULL or an integer"),
            ("pid", OrNull("{0}pid", IntIn("{0}pid", 0, int.MaxValue)), "NULL or a process id"),
            ("comm", OrNull("{0}comm", Text("{0}comm")), "NULL or text"),
            ("detail", OrNull("{0}detail", Text("{0}detail")), "NULL or text"),
            ("offset", OrNull("{0}offset", IntIn("{0}offset", 0, long.MaxValue)), "NULL or an integer >= 0"),
            ("length", OrNull("{0}length", IntIn("{0}length", 0, long.MaxValue)), "NULL or an integer >= 0"),
            ("run", OrNull("{0}run", "typeof({0}run) = 'blob' AND length({0}run) BETWEEN 1 AND " + Number(EventRun.MaxBytes) + " AND {0}op = 2 AND {0}path2_id IS NULL AND {0}detail IS NULL"),
                "NULL or a write run (bytes, in a WRITE row without a second path or detail)"),
        ],
        ["versions"] =
        [
            ("id", IntIn("{0}id", 1, long.MaxValue), "an integer >= 1"),
            ("session_id", Int("{0}session_id"), "an integer"),
            ("path_id", Int("{0}path_id"), "an integer"),
            ("seq", IntIn("{0}seq", 0, long.MaxValue), "an integer >= 0"),
            ("time_ns", Int("{0}time_ns"), "an integer"),
            ("kind", IntIn("{0}kind", 0, 3), "0 absent, 1 file, 2 directory or 3 symlink"),
            ("mode", IntIn("{0}mode", 0, 0xFFF), "permission bits 0 to 07777"),
            ("uid", IntIn("{0}uid", int.MinValue, int.MaxValue), "a 32-bit user id"),
            ("gid", IntIn("{0}gid", int.MinValue, int.MaxValue), "a 32-bit group id"),
            ("mtime_ns", Int("{0}mtime_ns"), "an integer"),
            ("size", IntIn("{0}size", 0, MaxFileSize), "an integer 0 to 2^50"),
            ("content", "({0}content IS NULL OR (typeof({0}content) = 'blob' AND length({0}content) = 32))", "NULL or 32 bytes"),
            ("target", "({0}kind != 3 OR (" + PathValue("{0}target") + " AND length({0}target) > 0))", "the link target (text or bytes) of a symlink"),
            ("extents", OrNull("{0}extents", "typeof({0}extents) = 'blob'"), "NULL or bytes"),
            ("pruned", "{0}pruned IN (0, 1)", "0 or 1"),
            ("link", OrNull("{0}link", Int("{0}link")), "NULL or an integer (the hard-link group)"),
        ],
        ["blobs"] =
        [
            ("id", IntIn("{0}id", 1, long.MaxValue), "an integer >= 1"),
            ("hash", "typeof({0}hash) = 'blob' AND length({0}hash) = 32", "32 bytes"),
            ("codec", IntIn("{0}codec", 0, 5), "0 raw, 1 zstd, 2 zstd delta, 3 bsdiff, 4 group or 5 slice"),
            ("pack_id", "CASE WHEN {0}codec = 5 THEN " + Int("{0}pack_id") + " AND {0}pack_id = -1 ELSE " + IntIn("{0}pack_id", 0, 1L << 53) + " END",
                "a pack number (-1 for a slice)"),
            ("offset", "CASE WHEN {0}codec = 5 THEN " + IntIn("{0}offset", 0, PackFormat.MaxGroupLength) + " ELSE " + IntIn("{0}offset", PackFormat.HeaderSize, MaxPackSize) + " END",
                "a pack offset 16 to 2^40 (for a slice, an offset in its group 0 to 2^20)"),
            ("raw_len", "CASE WHEN {0}codec = 4 THEN " + IntIn("{0}raw_len", 0, PackFormat.MaxGroupLength) + " ELSE " + IntIn("{0}raw_len", 0, PackFormat.MaxRawLength) + " END",
                "an integer 0 to 262144 (for a group, 0 to 2^20)"),
            ("stored_len", "CASE {0}codec WHEN 5 THEN " + IntIn("{0}stored_len", 0, 0) + " WHEN 4 THEN " + IntIn("{0}stored_len", 0, MaxGroupStored) + " ELSE " + IntIn("{0}stored_len", 0, MaxStored) + " END",
                "an integer 0 to the compressed bound of 262144 (of 2^20 for a group, 0 for a slice)"),
            ("bases", "(CASE WHEN {0}codec IN (2, 3, 5) THEN typeof({0}bases) = 'blob' ELSE {0}bases IS NULL END)", "a base list for a delta codec or a slice, NULL otherwise"),
        ],
        ["packs"] =
        [
            ("id", IntIn("{0}id", 0, 1L << 53), "a pack number"),
            ("committed_size", IntIn("{0}committed_size", 0, MaxPackSize), "an integer 0 to 2^40"),
        ],
    };

    /// <summary>Format 1 has no <c>bases</c> or <c>pruned</c> columns.</summary>
    private static readonly HashSet<string> Format2Columns = ["bases", "pruned"];

    /// <summary>Formats 1 and 2 have no <c>versions.link</c> column.</summary>
    private static readonly HashSet<string> Format3Columns = ["link"];

    /// <summary>Formats 1 to 3 have no <c>events.offset</c> or <c>events.length</c> (blobs.offset is older).</summary>
    private static bool Format4Column(string table, string column) => table == "events" && column is "offset" or "length";

    /// <summary>Formats 1 to 6 have no <c>events.run</c>.</summary>
    private static bool Format7Column(string table, string column) => (table, column) is ("events", "run");

    /// <summary>Formats 1 to 4 have no <c>roots.paths_root</c> or <c>sessions.baseline_from</c>.</summary>
    private static bool Format5Column(string table, string column) => (table, column) is ("roots", "paths_root") or ("sessions", "baseline_from");

    /// <summary>
    /// An SQL expression over one row of <paramref name="table"/> (its columns prefixed by <paramref name="prefix"/>,
    /// e.g. "v."): NULL when every column is in its domain, else the name and domain of the first that is not.
    /// </summary>
    public static string Broken(string table, string prefix = "", int format = CatalogSchema.FormatVersion)
    {
        // A loop, not Where(...).Select(...): Select on Where's iterator is a generic virtual method, which NativeAOT
        // resolves at run time through its type loader, whose first use cost every command that opens a catalog ~1 ms
        // (perf, materialize; branch `startup` in docs/benchmarks.md).
        var sql = new StringBuilder("(CASE");
        foreach (var r in Rules[table])
        {
            if ((format >= 2 || !Format2Columns.Contains(r.Column)) && (format >= 3 || !Format3Columns.Contains(r.Column))
                && (format >= 4 || !Format4Column(table, r.Column)) && (format >= 5 || !Format5Column(table, r.Column)) && (format >= 7 || !Format7Column(table, r.Column)))
            {
                sql.Append(" WHEN NOT coalesce((").Append(r.Rule.Replace("{0}", prefix, StringComparison.Ordinal))
                    .Append("), 0) THEN '").Append(r.Column).Append(" is not ").Append(r.Words).Append('\'');
            }
        }

        return sql.Append(" END)").ToString();
    }

    /// <summary>The exit-5 sentence for a row a reader found outside its domain.</summary>
    public static DiffKeeperException Throw(string table, string row, string broken) =>
        new(ExitCode.Corrupt, $"the catalog is damaged: {table} row {row}: {broken}; 'diffkeeper verify' lists every damaged row");

    /// <summary>The rows of every table that break a rule, at most <paramref name="perTable"/> named per table, for verify.</summary>
    internal static List<string> Scan(SqliteDatabase db, int format, int perTable = 5)
    {
        var problems = new List<string>();

        // SQLite's own structure first: a damaged index answers queries differently depending on which index a
        // query uses (show reads a path's versions by path, export a moment's by session).
        using (var check = db.Prepare("PRAGMA integrity_check(10)"))
        {
            while (check.Step())
            {
                if (check.StringOrNull(0) is { } line && line != "ok")
                {
                    problems.Add($"catalog: SQLite integrity check: {line}");
                }
            }
        }

        foreach (var table in Rules.Keys)
        {
            var key = table == "events" ? "t.session_id || '/' || t.seq" : "t.rowid";
            using var r = db.Prepare($"SELECT k, b FROM (SELECT {key} AS k, {Broken(table, "t.", format)} AS b FROM {table} t) WHERE b IS NOT NULL");
            var count = 0;
            while (r.Step())
            {
                if (++count <= perTable)
                {
                    problems.Add($"catalog: {table} row {r.StringOrNull(0)}: {r.String(1)}");
                }
            }

            if (count > perTable)
            {
                problems.Add(string.Create(CultureInfo.InvariantCulture, $"catalog: {table}: {count - perTable} more rows outside their domain"));
            }
        }

        return problems;
    }
}
