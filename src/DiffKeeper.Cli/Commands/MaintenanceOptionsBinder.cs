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

    public Option<int> SnapshotInterval { get; } = new Option<int>("--snapshot-interval")
    {
        Description = "Every N-th version of a path, counted back from the newest, stays whole, so no read follows more than N-1 deltas",
        DefaultValueFactory = _ => 10,
        HelpName = "N",
    }.Expecting("a number of versions (1: every version whole)", n => n >= 1);

    public Option<double> RepackThreshold { get; } = new Option<double>("--repack-threshold")
    {
        Description = "Repack a pack when less than this fraction of its bytes is still referenced (copying the rest costs I/O once; the default tolerates 10% garbage)",
        DefaultValueFactory = _ => 0.9,
        HelpName = "F",
    }.ExpectingFraction();

    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Print the summary as one JSON object on stdout: versions_pruned, blobs_swept, compaction, packs_repacked, packs_dropped, pack_bytes_before, pack_bytes_after, pack_files_left",
    };

    public IEnumerable<Option> All => [Delta, SnapshotInterval, RepackThreshold, Json];

    public MaintenanceOptions Bind(ParseResult pr, PrunePolicy? prune)
    {
        BlobCodec? codec = pr.GetValue(Delta) switch
        {
            "zstd" => BlobCodec.ZstdDelta,
            "bsdiff" => BlobCodec.BsDiff,
            "none" => null,
            var other => throw new DiffKeeperException(ExitCode.Usage, $"--delta must be zstd, bsdiff or none, not '{other}'"),
        };
        // --snapshot-interval and --repack-threshold are range-checked by their parsers.
        var interval = pr.GetValue(SnapshotInterval);
        var threshold = pr.GetValue(RepackThreshold);
        return new MaintenanceOptions(codec, interval, threshold, prune);
    }
}
