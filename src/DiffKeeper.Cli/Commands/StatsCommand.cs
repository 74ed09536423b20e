using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class StatsCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var json = new Option<bool>("--json") { Description = "One JSON object: raw_bytes, stored_bytes, catalog_bytes, versions, blobs, ... , worst_rebuild, top_paths" };
        var top = new Option<int>("--top") { Description = "How many paths to list by stored bytes", DefaultValueFactory = _ => 10, HelpName = "N" }
            .Expecting("a number of paths (0 or more)", n => n >= 0);
        var cmd = new Command("stats", """
            What the trace holds and what it costs: raw bytes recorded (the sum of every file version's size), stored
            bytes (pack records), catalog bytes, deduplication and compression ratios, versions, blobs, the worst
            rebuild (the version whose export decodes the most bytes per byte of the file, delta bases included),
            and the paths that brought the most new content.
            """)
        {
            trace, json, top,
        };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var st = TraceStatistics.Compute(reader, pr.GetValue(top));
            if (pr.GetValue(json))
            {
                using var stdout = console.OpenStandardOutput();
                using (var j = new Utf8JsonWriter(stdout))
                {
                    j.WriteStartObject();
                    j.WriteNumber("sessions", st.Sessions);
                    j.WriteNumber("versions", st.Versions);
                    j.WriteNumber("blobs", st.Blobs);
                    j.WriteNumber("raw_bytes", st.RawBytes);
                    j.WriteNumber("unique_bytes", st.UniqueBytes);
                    j.WriteNumber("stored_bytes", st.StoredBytes);
                    j.WriteNumber("pack_bytes", st.PackBytes);
                    j.WriteNumber("catalog_bytes", st.CatalogBytes);
                    j.WriteNumber("dedup_ratio", Math.Round(st.DedupRatio, 4));
                    j.WriteNumber("compression_ratio", Math.Round(st.CompressionRatio, 4));
                    if (st.WorstRebuild is { } worst)
                    {
                        j.WriteStartObject("worst_rebuild");
                        j.WriteNumber("session", worst.SessionId);
                        JsonPath.Write(j, "path", worst.Path);
                        j.WriteNumber("version", worst.VersionId);
                        j.WriteNumber("size", worst.Size);
                        j.WriteNumber("decoded_bytes", worst.DecodedBytes);
                        j.WriteNumber("ratio", Math.Round(worst.Ratio, 4));
                        j.WriteNumber("deltas", worst.Deltas);
                        j.WriteEndObject();
                    }
                    else
                    {
                        j.WriteNull("worst_rebuild");
                    }

                    j.WriteStartArray("top_paths");
                    foreach (var p in st.TopPaths)
                    {
                        j.WriteStartObject();
                        j.WriteNumber("session", p.SessionId);
                        JsonPath.Write(j, "path", p.Path);
                        j.WriteNumber("stored_bytes", p.StoredBytes);
                        j.WriteNumber("versions", p.Versions);
                        j.WriteEndObject();
                    }

                    j.WriteEndArray();
                    j.WriteEndObject();
                }

                stdout.Write("\n"u8);
                return 0;
            }

            var w = console.Out;
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"sessions     {st.Sessions}"));
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"versions     {st.Versions}"));
            w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"blobs        {st.Blobs}"));
            w.WriteLine($"raw          {TimelineRenderer.FormatSize(st.RawBytes)}  (every file version, in full)");
            w.WriteLine($"unique       {TimelineRenderer.FormatSize(st.UniqueBytes)}  (distinct chunks)  dedup {st.DedupRatio.ToString("0.00", CultureInfo.InvariantCulture)}×");
            w.WriteLine($"stored       {TimelineRenderer.FormatSize(st.StoredBytes)}  (pack records)  compression {st.CompressionRatio.ToString("0.00", CultureInfo.InvariantCulture)}×");
            w.WriteLine($"catalog      {TimelineRenderer.FormatSize(st.CatalogBytes)}");
            if (st.WorstRebuild is { } rebuild)
            {
                w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"worst rebuild {rebuild.Ratio:0.00}× ({TimelineRenderer.FormatSize(rebuild.DecodedBytes)} decoded for {TimelineRenderer.FormatSize(rebuild.Size)}{(rebuild.Size < RebuildCost.Floor ? ", counted as 64 KiB" : "")}, chain of {rebuild.Deltas} deltas)  session {rebuild.SessionId}  {DiffKeeper.Core.PathBytes.Display(rebuild.Path)}"));
            }

            if (st.TopPaths.Count > 0)
            {
                w.WriteLine("top paths by stored bytes (new content they brought):");
                foreach (var p in st.TopPaths)
                {
                    w.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {TimelineRenderer.FormatSize(p.StoredBytes),10}  {p.Versions,5} versions  session {p.SessionId}  {DiffKeeper.Core.PathBytes.Display(p.Path)}"));
                }
            }

            w.Flush();
            return 0;
        });
        return cmd;
    }
}
