using System.CommandLine;
using DiffKeeper.Core;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Cli.Commands;

/// <summary>The options of garbage collection, shared by 'gc' and 'prune' so both read and document them alike.</summary>
internal sealed class MaintenanceOptionsBinder
{
    public Option<string> Delta { get; } = new("--delta")
    {
        Description = "How older versions are re-encoded: zstd (a zstd delta against the next-newer version, the --patch-from technique), bsdiff, or none",
        DefaultValueFactory = _ => "zstd",
        HelpName = "zstd|bsdiff|none",
    };

    public Option<int?> SnapshotInterval { get; } = new Option<int?>("--snapshot-interval")
    {
        Description = "Also bound delta chains by count: no read follows more than N-1 deltas (1: every version whole). Unset by default: --rebuild-bound decides",
        HelpName = "N",
    }.Expecting("a number of versions (1: every version whole)", n => n >= 1);

    public Option<double> RebuildBound { get; } = new Option<double>("--rebuild-bound")
    {
        Description = "Rebuilding any chunk of any version decodes at most K times its bytes (chunks under 64 KiB count as 64 KiB): a delta whose chain would decode more stays whole. 'stats' reports the worst version",
        DefaultValueFactory = _ => DiffKeeper.Storage.RebuildCost.DefaultBound,
        HelpName = "K",
    }.ExpectingAtLeast(1, "a factor of at least 1, for example 32");

    public Option<double> RepackThreshold { get; } = new Option<double>("--repack-threshold")
    {
        Description = "Repack a pack when less than this fraction of its bytes is still referenced (copying the rest costs I/O once; the default tolerates 10% garbage)",
        DefaultValueFactory = _ => 0.9,
        HelpName = "F",
    }.ExpectingFraction();

    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Print the summary as one JSON object on stdout: versions_pruned, blobs_swept, compaction, grouping, packs_repacked, packs_dropped, pack_bytes_before, pack_bytes_after, pack_files_left",
    };

    public IEnumerable<Option> All => [Delta, RebuildBound, SnapshotInterval, RepackThreshold, Json];

    public MaintenanceOptions Bind(ParseResult pr, PrunePolicy? prune)
    {
        BlobCodec? codec = pr.GetValue(Delta) switch
        {
            "zstd" => BlobCodec.ZstdDelta,
            "bsdiff" => BlobCodec.BsDiff,
            "none" => null,
            var other => throw new DiffKeeperException(ExitCode.Usage, $"--delta must be zstd, bsdiff or none, not '{other}'"),
        };
        // --snapshot-interval, --rebuild-bound and --repack-threshold are range-checked by their parsers.
        var interval = pr.GetValue(SnapshotInterval);
        var threshold = pr.GetValue(RepackThreshold);
        return new MaintenanceOptions(codec, interval, threshold, prune) { RebuildBound = pr.GetValue(RebuildBound) };
    }
}
