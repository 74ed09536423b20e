using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Storage.Maintenance;

namespace DiffKeeper.Cli.Commands;

internal static class GcCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var options = new MaintenanceOptionsBinder();
        var cmd = new Command("gc", """
            Compact and collect garbage: forget blobs no kept version needs, re-encode the chunks of older versions as
            deltas against the next-newer version (the newest version of every path stays whole, so restoring it never
            follows a delta chain), and repack packs that are mostly garbage. Safe to kill at any moment: every step
            commits before the next, and old packs are deleted only after the catalog stops naming them.
            Takes the trace's writer lock (exit 4 while a recording runs).
            """)
        {
            trace,
        };
        foreach (var o in options.All)
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(pr => Run(console, pr.GetValue(trace)!, options.Bind(pr, null), pr.GetValue(options.Json)));
        return cmd;
    }

    /// <summary>Runs maintenance with a progress line on a terminal's stderr and one summary line; shared with 'prune'.</summary>
    internal static int Run(IConsole console, string traceDir, MaintenanceOptions options, bool json)
    {
        MaintenanceResult r;
        using (var progress = TerminalProgress.ForStderr(console))
        {
            r = StoreMaintenance.Run(traceDir, options, DateTimeOffset.UtcNow, progress.Of<string>(step => $"gc: {step}"));
        }

        if (json)
        {
            JsonSummary.ToStdout(console, j =>
            {
                if (options.Prune is not null)
                {
                    j.WriteNumber("versions_pruned", r.VersionsPruned);
                }
                else
                {
                    j.WriteNull("versions_pruned");
                }

                j.WriteNumber("blobs_swept", r.BlobsSwept);
                Counts(j, "compaction", r.Compaction is { } c
                    ? [("examined", c.Examined), ("encoded", c.Encoded), ("bytes_before", c.BytesBefore), ("bytes_after", c.BytesAfter)]
                    : null);
                Counts(j, "grouping", r.Grouping is { } g
                    ? [("groups", g.Groups), ("members", g.Members), ("regrouped", g.Regrouped), ("bytes_before", g.BytesBefore), ("bytes_after", g.BytesAfter)]
                    : null);

                j.WriteNumber("packs_repacked", r.Collection.PacksRepacked);
                j.WriteNumber("packs_dropped", r.Collection.PacksDropped);
                j.WriteNumber("pack_bytes_before", r.PackBytesBefore);
                j.WriteNumber("pack_bytes_after", r.PackBytesAfter);
                j.WriteNumber("pack_files_left", r.Collection.PackFilesLeft);
            });
            return 0;
        }

        var parts = new List<string>();
        if (options.Prune is not null)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture, $"{r.VersionsPruned} versions pruned"));
        }

        parts.Add(string.Create(CultureInfo.InvariantCulture, $"{r.BlobsSwept} blobs swept"));
        if (r.Compaction is { } c)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture,
                $"{c.Encoded} of {c.Examined} older chunks re-encoded as deltas ({TimelineRenderer.FormatSize(c.BytesBefore)} -> {TimelineRenderer.FormatSize(c.BytesAfter)})"));
        }

        if (r.Grouping is { Members: > 0 } g)
        {
            parts.Add(string.Create(CultureInfo.InvariantCulture,
                $"{g.Members} small blobs compressed together in {g.Groups} groups ({TimelineRenderer.FormatSize(g.BytesBefore)} -> {TimelineRenderer.FormatSize(g.BytesAfter)})"));
        }

        parts.Add(string.Create(CultureInfo.InvariantCulture, $"{r.Collection.PacksRepacked} packs repacked, {r.Collection.PacksDropped} dropped"));
        console.Out.WriteLine($"gc: {string.Join(", ", parts)}; packs {TimelineRenderer.FormatSize(r.PackBytesBefore)} -> {TimelineRenderer.FormatSize(r.PackBytesAfter)}");
        if (r.Collection.PackFilesLeft > 0)
        {
            console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"gc: {r.Collection.PackFilesLeft} unused pack files stay until no reader has the trace open; the next writer deletes them"));
        }

        console.Out.Flush();
        return 0;
    }

    /// <summary>An object of counts named <paramref name="name"/>, or null when that part of the pass did not run.</summary>
    private static void Counts(System.Text.Json.Utf8JsonWriter j, string name, (string Key, long Value)[]? counts)
    {
        if (counts is null)
        {
            j.WriteNull(name);
            return;
        }

        j.WriteStartObject(name);
        foreach (var (key, value) in counts)
        {
            j.WriteNumber(key, value);
        }

        j.WriteEndObject();
    }
}
