using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Storage;

namespace DiffKeeper.Cli.Commands;

internal static class SessionsCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var json = new Option<bool>("--json") { Description = "One JSON object per line" };
        var cmd = new Command("sessions", "List the sessions of a trace.") { trace, json };
        cmd.SetAction(pr =>
        {
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            foreach (var s in reader.Sessions())
            {
                if (pr.GetValue(json))
                {
                    console.Out.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
                    {
                        ["session"] = s.Id,
                        ["command"] = s.Command,
                        ["cwd"] = s.Cwd,
                        ["capture"] = s.Capture,
                        ["started_wall_ns"] = s.StartedWallNs,
                        ["started"] = s.StartedWall.ToString("O", CultureInfo.InvariantCulture),
                        ["ended_ns"] = s.EndedNs,
                        ["exit_code"] = s.ExitCode,
                        ["lost_events"] = s.LostEvents,
                        ["state"] = s.State,
                        ["roots"] = s.Roots.Select(r => r.Path).ToArray(),
                        ["events"] = reader.MaxSeq(s),
                        ["contents_kept"] = s.ContentsNotKept is null,
                    }, SessionsJson.Default.DictionaryStringObject));
                }
                else
                {
                    console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{s.Id,4}  {s.StartedWall:yyyy-MM-ddTHH:mm:ss.fffZ}  {s.Capture,-8} {reader.MaxSeq(s),7} events  {TimelineRenderer.Describe(s) + (s.ContentsNotKept is null ? "" : ", not kept"),-20}  {TimelineRenderer.Printable(s.Command)}"));
                }
            }

            console.Out.Flush();
            return 0;
        });
        return cmd;
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(Dictionary<string, object?>))]
[System.Text.Json.Serialization.JsonSerializable(typeof(string[]))]
[System.Text.Json.Serialization.JsonSerializable(typeof(long))]
[System.Text.Json.Serialization.JsonSerializable(typeof(int))]
[System.Text.Json.Serialization.JsonSerializable(typeof(bool))]
internal sealed partial class SessionsJson : System.Text.Json.Serialization.JsonSerializerContext;
