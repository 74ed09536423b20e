using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Replay.BigFiles;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class MaterializeCommand
{
    public static Command Create(IConsole console)
    {
        var id = new Argument<long>("ID") { Description = "The snapshot id 'diffkeeper snapshot' printed" };
        var store = new Option<string>("--store") { Description = "The snapshot store", Required = true, HelpName = "DIR" };
        var output = new Option<string>("--out", "-o") { Description = "Directory to publish (new, empty, or an earlier materialization)", Required = true, HelpName = "DIR" };
        var baseDir = new Option<string?>("--base")
        {
            Description = "An earlier materialization to clone from (default: --out itself when it is one)",
            HelpName = "DIR",
        };
        var cmd = new Command("materialize", """
            Publish a snapshot as a directory of complete files. Where an earlier materialization is on the same
            file system (btrfs, xfs with reflink), each file is a reflink clone of it with only the changed blocks
            written; otherwise the files are copied from the store with their holes. Built in a temporary sibling
            and renamed into place: --out is always the old complete snapshot or the new one.
            Example: diffkeeper materialize 3 --store /snaps --out /vm/current
                     diffkeeper materialize 4 --store /snaps --base /vm/current --out /vm/next
            """)
        {
            id, store, output, baseDir,
        };
        cmd.SetAction(pr =>
        {
            // Beside the catalog's pages: the buffers two threads read changed blocks into to check them. Not given
            // back at the end: the process exits right after, and trimming the heap first (malloc_trim's madvise calls,
            // each a TLB flush) only added to every run's wall time.
            _ = CatalogHeap.Reserve(pr.GetValue(store)!, 2 * PackClones.LaneBytes);
            using var reader = TraceReader.Open(pr.GetValue(store)!, tidy: true);
            var r = SnapshotMaterializer.Materialize(reader, pr.GetValue(id), pr.GetValue(output)!, pr.GetValue(baseDir));
            if (r.BaseDir is not null && r.CopyReason is not null)
            {
                console.Error.WriteLine($"diffkeeper: copying instead of cloning: {r.CopyReason}");
            }

            if (r.BlockCopyReason is not null)
            {
                console.Error.WriteLine($"diffkeeper: writing changed blocks instead of cloning them from the store: {r.BlockCopyReason}");
            }

            // The sizes formatted before the line, not inside it: an interpolated string formatted while another holds its
            // pooled buffer made the shared array pool build its per-core lists and run the runtime's timing loop for the
            // processor number (~0.5 ms of every materialization; docs/benchmarks.md, "mat17").
            long size = 0, written = 0, sharedBytes = 0;
            var cloned = 0;
            foreach (var f in r.Files)
            {
                (size, written, sharedBytes, cloned) = (size + f.Size, written + f.BytesWritten, sharedBytes + f.BytesCloned, cloned + (f.Cloned ? 1 : 0));
            }

            var (sizeText, writtenText, sharedText) = (TimelineRenderer.FormatSize(size), TimelineRenderer.FormatSize(written), TimelineRenderer.FormatSize(sharedBytes));
            var plural = r.StaleRemoved == 1 ? "" : "s";
            console.Error.WriteLine($"diffkeeper: materialized snapshot {r.Id} to {r.OutDir}: {r.Files.Count} files " +
                $"({sizeText}), {cloned} cloned from {r.BaseDir ?? "nothing"}, {writtenText} written" +
                (sharedBytes > 0 ? ", " + sharedText + " shared with the store" : "") +
                $" in {r.ElapsedMs} ms" +
                (r.StaleRemoved > 0 ? "; removed " + r.StaleRemoved.ToString(System.Globalization.CultureInfo.InvariantCulture) + " half-built output" + plural + " of an interrupted run" : ""));
            return 0;
        });
        return cmd;
    }
}
