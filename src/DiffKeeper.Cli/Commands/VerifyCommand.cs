using System.CommandLine;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class VerifyCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var cmd = new Command("verify", $"""
            Re-read every pack record and blob (CRC-32C and SHA-256) and check every version's content id.
            Prints each damaged path with its session, version and blob. Exit status {(int)ExitCode.Corrupt} when anything is damaged.
            """)
        {
            trace,
        };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var report = TraceVerifier.Verify(reader);
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
            console.Out.WriteLine($"damaged: {report.Damages.Count} versions of {paths} paths, {report.Problems.Count} pack problems ({summary} checked)");
            console.Out.Flush();
            return (int)ExitCode.Corrupt;
        });
        return cmd;
    }
}
