using System.CommandLine;
using System.Globalization;
using DiffKeeper.Cli.Remote;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Remote;
using DiffKeeper.Remote.S3;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class PushCommand
{
    public static Command Create(IConsole console)
    {
        var trace = new Argument<string>("TRACE") { Description = "The local trace directory" };
        var url = new Argument<string>("URL") { Description = "The remote store, s3://bucket/prefix" };
        var session = CommonOptions.Session();
        session.Description = "Only this session (default: every session not uploaded yet)";
        var cmd = new Command("push", "Upload the sessions of a local trace to S3-compatible storage; blobs already there are not sent again, and an interrupted push resumes.")
        {
            trace, url, session,
        };
        cmd.SetAction(async (pr, cancel) =>
        {
            var location = S3Location.Parse(pr.GetValue(url)!);
            var dir = Path.GetFullPath(pr.GetValue(trace)!);
            List<Storage.Catalog.SessionInfo> sessions;
            using (var reader = TraceReader.Open(dir))
            {
                sessions = pr.GetValue(session) is { } only ? [reader.Session(only)] : [.. reader.Sessions()];
            }

            using var store = S3ObjectStore.FromEnvironment(location);
            var uploader = new SessionUploader(store, Path.Combine(RemoteCache.Root(), RemoteLayout.CacheName(store.Name))) { ForgetGrace = ForgetCommand.GraceFromEnvironment() };
            foreach (var s in sessions)
            {
                if (s.StartedWallNs == 0 || s.State == "recording")
                {
                    console.Out.WriteLine($"session {s.Id}: skipped, still {(s.StartedWallNs == 0 ? "starting" : "recording")}");
                    continue;
                }

                var key = SessionUploader.KeyOf(dir, s.Id);
                if ((await uploader.GenerationsAsync(key, cancel).ConfigureAwait(false)).Count > 0)
                {
                    console.Out.WriteLine($"session {s.Id}: already at {store.Name} ({key})");
                    continue;
                }

                var result = await uploader.UploadAsync(dir, s.Id, publish: true, cancel).ConfigureAwait(false);
                console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"session {s.Id}: uploaded as {result.Key}: {result.NewBlobs} new blobs ({result.NewPackBytes} bytes), {result.ReusedBlobs} already there, segment {result.SegmentBytes} bytes"));
            }

            console.Out.WriteLine(store.Counters.ToString());
            console.Out.Flush();
            return 0;
        });
        return cmd;
    }
}
