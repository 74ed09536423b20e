using System.Text;
using System.Text.Json;

namespace DiffKeeper.Cli.Rendering;

/// <summary>One JSON object on one line: what `--json` prints for a command's summary.</summary>
public static class JsonSummary
{
    /// <summary>On stdout.</summary>
    public static void ToStdout(IConsole console, Action<Utf8JsonWriter> fields)
    {
        using var stdout = console.OpenStandardOutput();
        stdout.Write(Encode(fields));
        stdout.Flush();
    }

    /// <summary>On stderr, for `record`, whose stdout is the recorded command's.</summary>
    public static void ToStderr(IConsole console, Action<Utf8JsonWriter> fields) => console.Error.Write(Encoding.UTF8.GetString(Encode(fields)));

    private static byte[] Encode(Action<Utf8JsonWriter> fields)
    {
        var buffer = new MemoryStream();
        using (var j = new Utf8JsonWriter(buffer))
        {
            j.WriteStartObject();
            fields(j);
            j.WriteEndObject();
        }

        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }
}
