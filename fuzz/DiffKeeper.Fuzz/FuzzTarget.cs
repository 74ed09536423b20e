using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Fuzz;

/// <summary>
/// One fuzz target: feeds the bytes to the real reader code. Returning (or throwing a clean rejection, see
/// <see cref="IsCleanRejection"/>) is a pass; any other exception escapes to SharpFuzz, which reports it to
/// afl-fuzz as a crash. Hangs are afl-fuzz's timeout; huge allocations fail under DOTNET_GCHeapHardLimit.
/// </summary>
public abstract class FuzzTarget
{
    public static readonly string[] Names = ["catalog", "pack", "zstd-delta", "bsdiff", "extent-map", "ebpf-record", "event-run"];

    public static FuzzTarget Named(string name, string baseDir) => name switch
    {
        "catalog" => new TraceFileTarget(baseDir, pack: false),
        "pack" => new TraceFileTarget(baseDir, pack: true),
        "zstd-delta" => new DeltaTarget(DiffKeeper.Storage.Packs.BlobCodec.ZstdDelta),
        "bsdiff" => new DeltaTarget(DiffKeeper.Storage.Packs.BlobCodec.BsDiff),
        "extent-map" => new ExtentMapTarget(),
        "ebpf-record" => new EbpfRecordTarget(),
        "event-run" => new EventRunTarget(),
        _ => throw new ArgumentException($"no fuzz target '{name}'; targets: {string.Join(", ", Names)}", nameof(name)),
    };

    public void Run(ReadOnlySpan<byte> input)
    {
        try
        {
            Fuzz(input);
        }
        catch (Exception e) when (IsCleanRejection(e))
        {
        }
    }

    protected abstract void Fuzz(ReadOnlySpan<byte> input);

    /// <summary>
    /// What the CLI turns into one `diffkeeper: ` line with a documented exit code for a damaged trace: a
    /// DiffKeeperException, and SQLite's own "corrupt" and "not a database" (CliApp maps both to exit 5).
    /// </summary>
    public static bool IsCleanRejection(Exception e) =>
        e is DiffKeeperException || e is CatalogException { ErrorCode: 11 or 26 };
}
