using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class VerifyCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var readData = new Option<bool>("--read-data")
        {
            Description = "Also decode every blob (zstd, delta chains) and re-hash its bytes (SHA-256); slower",
        };
        var json = new Option<bool>("--json") { Description = "Print one JSON object: ok, packs, blobs, blob_bytes, versions, damaged (path, session, version, seq, blob, reason), problems" };
        var cmd = new Command("verify", $"""
            Re-read every pack record (CRC-32C, header, delta base digest) and check every version: its extent map,
            the blobs it names and their delta bases, and its content id (the Merkle root over its extents).
            With --read-data every blob is decoded and re-hashed too. Prints each damaged path with its session,
            version and blob, and each damaged record that no version uses (nothing lost, but the pack is damaged).
            Exit status {(int)ExitCode.Corrupt} when anything is damaged.
            """)
        {
            trace, readData, json,
        };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            VerifyReport report;
            using (var progress = TerminalProgress.ForStderr(console))
            {
                report = TraceVerifier.Verify(reader, pr.GetValue(readData),
                    progress.Of<long>(n => string.Create(CultureInfo.InvariantCulture, $"verify: {n:N0} blobs checked")));
            }

            if (pr.GetValue(json))
            {
                JsonSummary.ToStdout(console, j =>
                {
                    j.WriteBoolean("ok", report.Ok);
                    j.WriteNumber("packs", report.Packs);
                    j.WriteNumber("blobs", report.Blobs);
                    j.WriteNumber("blob_bytes", report.BlobBytes);
                    j.WriteNumber("versions", report.Versions);
                    j.WriteStartArray("damaged");
                    foreach (var d in report.Damages)
                    {
                        j.WriteStartObject();
                        j.WriteString("path", d.Path);
                        j.WriteNumber("session", d.SessionId);
                        j.WriteNumber("version", d.VersionId);
                        j.WriteNumber("seq", d.Seq);
                        j.WriteString("blob", d.BlobId);
                        j.WriteString("reason", d.Reason);
                        j.WriteEndObject();
                    }

                    j.WriteEndArray();
                    j.WriteStartArray("problems");
                    foreach (var problem in report.Problems)
                    {
                        j.WriteStringValue(problem);
                    }

                    j.WriteEndArray();
                });
                return report.Ok ? 0 : (int)ExitCode.Corrupt;
            }

            foreach (var problem in report.Problems)
            {
                console.Out.WriteLine($"DAMAGED  {problem}");
            }

            foreach (var d in report.Damages)
            {
                console.Out.WriteLine($"DAMAGED  {d.Path}  (session {d.SessionId}, version {d.VersionId}, event #{d.Seq}){(d.BlobId is null ? "" : $"  blob {d.BlobId}")}: {d.Reason}");
            }

            var summary = $"{report.Packs} packs, {report.Blobs} blobs ({TimelineRenderer.FormatSize(report.BlobBytes)}), {report.Versions} versions";
            if (report.Ok)
            {
                console.Out.WriteLine($"ok: {summary} checked, no damage");
                console.Out.Flush();
                return 0;
            }

            var paths = report.Damages.Select(d => d.Path).Distinct().Count();
            console.Out.WriteLine($"damaged: {report.Damages.Count} versions of {paths} paths, {report.Problems.Count} other problems ({summary} checked)");
            console.Out.Flush();
            return (int)ExitCode.Corrupt;
        });
        return cmd;
    }
}
