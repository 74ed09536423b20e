using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace DiffKeeper.Remote;

/// <summary>Object names of a remote store (docs/store-format.md, "Remote stores").</summary>
public static class RemoteLayout
{
    public const string SessionsPrefix = "sessions/";
    public const string IndexPrefix = "index/";
    public const string PacksPrefix = "packs/";
    public const string SegmentsPrefix = "segments/";
    public const string ForgottenPrefix = "forgotten/";
    public const string ForgettingPrefix = "forgetting/";

    /// <summary>How old an object no manifest names must be before `forget` deletes it (docs/store-format.md, "Deleting").</summary>
    public static readonly TimeSpan DefaultForgetGrace = TimeSpan.FromHours(1);

    /// <summary>
    /// The lease of a `forget` run (docs/store-format.md, "Deleting"): its <c>.running</c> marker is put again every
    /// quarter of it; it deletes only within half of it from the last put; writers take a marker older than it for a
    /// dead run.
    /// </summary>
    public static readonly TimeSpan ForgetLease = TimeSpan.FromMinutes(4);

    /// <summary>A new `forget` run's name: its start (UTC) and 8 random hex digits.</summary>
    public static string ForgetRun(DateTimeOffset start) =>
        start.UtcDateTime.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture) + "-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));

    /// <summary>The marker of a `forget` run in progress (renewed while it runs).</summary>
    public static string ForgetRunning(string run) => $"{ForgettingPrefix}{run}.running";

    /// <summary>The marker a `forget` run leaves when it ends.</summary>
    public static string ForgetDone(string run) => $"{ForgettingPrefix}{run}.done";

    public static string Pack(string sha) => $"packs/{sha[..2]}/{sha}.pack";

    public static string Index(string sha) => $"index/{sha}.idx";

    public static string Segment(string sha) => $"segments/{sha}.seg";

    /// <summary>The marker `forget` leaves for a forgotten session: its last manifest, dated by the forget.</summary>
    public static string Forgotten(string key) => $"forgotten/{key}.json";

    public static string Manifest(string key, long generation) =>
        $"sessions/{key}/{generation.ToString("D10", CultureInfo.InvariantCulture)}.json";

    /// <summary>The same session of the same trace always gets the same key, so an upload resumes under it.</summary>
    public static string SessionKey(string host, string traceDir, long sessionId, long startedWallNs)
    {
        var id = SHA256.HashData(Encoding.UTF8.GetBytes($"{host}\0{traceDir}\0{sessionId}\0{startedWallNs}"));
        return $"{startedWallNs.ToString("D20", CultureInfo.InvariantCulture)}-{Convert.ToHexStringLower(id)[..16]}";
    }

    /// <summary>(key, generation) of a manifest's object name, or null for anything else.</summary>
    public static (string Key, long Generation)? ParseManifest(string name)
    {
        var parts = name.Split('/');
        return parts.Length == 3 && parts[0] == "sessions" && parts[2].EndsWith(".json", StringComparison.Ordinal)
            && long.TryParse(parts[2][..^5], NumberStyles.None, CultureInfo.InvariantCulture, out var gen)
            ? (parts[1], gen)
            : null;
    }

    /// <summary>The <c>&lt;sha&gt;</c> of a pack, index or segment object name, or null for anything else.</summary>
    public static string? ObjectSha(string name, string prefix, string suffix)
    {
        if (!name.StartsWith(prefix, StringComparison.Ordinal) || !name.EndsWith(suffix, StringComparison.Ordinal))
        {
            return null;
        }

        var sha = name[(name.LastIndexOf('/') + 1)..^suffix.Length];
        return sha.Length == 64 && sha.All(char.IsAsciiHexDigitLower) && name == (prefix == PacksPrefix ? Pack(sha) : prefix + sha + suffix) ? sha : null;
    }

    public static string Sha(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>A short stable name for a remote store, used for its directory in the local cache.</summary>
    public static string CacheName(string storeName) => Sha(Encoding.UTF8.GetBytes(storeName))[..16];
}
