using System.CommandLine;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Storage.BigFiles;

namespace DiffKeeper.Cli.Commands;

internal static class SnapshotCommand
{
    public static Command Create(IConsole console)
    {
        var files = new Argument<string[]>("FILE") { Description = "The files to snapshot (base names must differ)", Arity = ArgumentArity.OneOrMore };
        var store = new Option<string>("--store") { Description = "The snapshot store; created when missing", Required = true, HelpName = "DIR" };
        var parent = new Option<long?>("--parent") { Description = "The snapshot this one follows: unchanged blocks are shared with it", HelpName = "ID" }
            .Expecting("a snapshot id");
        var diff = new Option<bool>("--diff")
        {
            Description = "The files are diff snapshots (Firecracker's: sparse, their data extents are the changed pages): merged onto --parent's files of the same name",
        };
        var verifyAll = new Option<bool>("--verify-all")
        {
            Description = "Compare every block with --parent's by SHA-256, trusting none of the parent's block fingerprints (seeded XXH128, " +
                "kept in the store: a program that can read the store could craft a rewrite they miss); slower",
        };
        var json = new Option<bool>("--json") { Description = "Print the result as one JSON object" };
        var cmd = new Command("snapshot", """
            Store a complete snapshot of big files (VM memory, disk images, checkpoints) in 64 KiB blocks: only data
            extents are read, holes stay holes, and blocks equal to --parent's are not stored again. Every snapshot
            is complete (no diff chain): 'diffkeeper materialize ID' rebuilds it alone. Prints the snapshot id.
            A block whose fingerprint equals --parent's block at its offset is taken as unchanged without SHA-256
            (the fingerprints are a cache in DIR/fingerprints: deleting it is safe; --verify-all ignores it).
            Example: diffkeeper snapshot vm/mem vm/state --store /snaps
                     diffkeeper snapshot --diff --parent 1 diff/mem --store /snaps
            """)
        {
            files, store, parent, diff, verifyAll, json,
        };
        cmd.SetAction(pr =>
        {
            var result = SnapshotWriter.Take(pr.GetValue(store)!, pr.GetValue(files)!, pr.GetValue(parent), pr.GetValue(diff),
                "snapshot " + string.Join(' ', Environment.GetCommandLineArgs().Skip(2)), pr.GetValue(verifyAll));
            if (pr.GetValue(json))
            {
                JsonSummary.ToStdout(console, w => Json(w, result));
            }
            else
            {
                console.Out.WriteLine(result.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
                console.Error.WriteLine($"diffkeeper: snapshot {result.Id}{(result.Parent is { } p ? $" (parent {p})" : "")}: " +
                    string.Join(", ", result.Files.Select(f => $"{f.Name} {TimelineRenderer.FormatSize(f.Size)}, {f.PiecesChanged} new blocks")) +
                    $"; stored {TimelineRenderer.FormatSize(result.StoredBytes)} in {result.ElapsedMs} ms");
            }

            return 0;
        });
        return cmd;
    }

    private static void Json(Utf8JsonWriter w, SnapshotResult r)
    {
        w.WriteNumber("id", r.Id);
        if (r.Parent is { } p)
        {
            w.WriteNumber("parent", p);
        }
        else
        {
            w.WriteNull("parent");
        }

        w.WriteNumber("stored_bytes", r.StoredBytes);
        w.WriteNumber("elapsed_ms", r.ElapsedMs);
        w.WriteStartArray("files");
        foreach (var f in r.Files)
        {
            w.WriteStartObject();
            w.WriteString("name", f.Name);
            w.WriteNumber("size", f.Size);
            w.WriteNumber("bytes_read", f.BytesRead);
            w.WriteNumber("new_blocks", f.PiecesChanged);
            w.WriteNumber("blocks_by_fingerprint", f.PiecesByFingerprint);
            w.WriteNumber("stored_bytes", f.StoredBytes);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }
}
