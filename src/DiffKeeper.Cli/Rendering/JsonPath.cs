using System.Text.Json;
using DiffKeeper.Core;

namespace DiffKeeper.Cli.Rendering;

/// <summary>
/// Writes a path (or symlink target) into JSON output losslessly. A UTF-8 path is one string field, as always. A
/// path holding bytes that are not UTF-8 (JSON strings cannot hold them) is written as its display form
/// (<see cref="PathBytes.Display"/>, as the text output shows it) and, beside it, <c>NAME_b64</c> with the exact
/// bytes in base64. So a consumer takes <c>NAME_b64</c> when it is present and <c>NAME</c> otherwise (README, "JSON output").
/// </summary>
public static class JsonPath
{
    public static void Write(Utf8JsonWriter j, string name, string? path)
    {
        if (path is null)
        {
            j.WriteNull(name);
            return;
        }

        if (!PathBytes.HasRawBytes(path))
        {
            j.WriteString(name, path);
            return;
        }

        j.WriteString(name, PathBytes.Display(path));
        j.WriteString(name + "_b64", Convert.ToBase64String(PathBytes.Encode(path)));
    }
}
