using System.Globalization;
using System.Text;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// Reads the few XML answers S3 gives this client (ListObjectsV2's ListBucketResult, Error): elements found by name,
/// their text with the five XML entities and character references decoded. S3 writes these answers without CDATA,
/// comments or attributes on the elements read here; anything that does not read this way throws
/// <see cref="FormatException"/> (the store reports the answer as malformed).
/// </summary>
internal static class S3Xml
{
    /// <summary>The raw content of every &lt;name&gt;…&lt;/name&gt; in <paramref name="xml"/>, in order.</summary>
    public static IEnumerable<string> Elements(string xml, string name)
    {
        var open = "<" + name + ">";
        var close = "</" + name + ">";
        for (var at = xml.IndexOf(open, StringComparison.Ordinal); at >= 0; at = xml.IndexOf(open, at, StringComparison.Ordinal))
        {
            var start = at + open.Length;
            var end = xml.IndexOf(close, start, StringComparison.Ordinal);
            if (end < 0)
            {
                throw new FormatException($"<{name}> is not closed");
            }

            yield return xml[start..end];
            at = end + close.Length;
        }
    }

    /// <summary>The decoded text of the first &lt;name&gt; element, or null.</summary>
    public static string? Text(string xml, string name) => Elements(xml, name).Select(Decode).FirstOrDefault();

    /// <summary>Element text with &amp;amp; &amp;lt; &amp;gt; &amp;quot; &amp;apos; and &amp;#N; / &amp;#xN; decoded.</summary>
    public static string Decode(string raw)
    {
        if (!raw.Contains('&', StringComparison.Ordinal))
        {
            return raw.Contains('<', StringComparison.Ordinal) ? throw new FormatException($"unexpected markup in '{raw}'") : raw;
        }

        var sb = new StringBuilder(raw.Length);
        for (var i = 0; i < raw.Length; i++)
        {
            if (raw[i] == '<')
            {
                throw new FormatException($"unexpected markup in '{raw}'");
            }

            if (raw[i] != '&')
            {
                sb.Append(raw[i]);
                continue;
            }

            var semi = raw.IndexOf(';', i);
            if (semi < 0)
            {
                throw new FormatException($"an unterminated entity in '{raw}'");
            }

            var entity = raw[(i + 1)..semi];
            switch (entity)
            {
                case "amp": sb.Append('&'); break;
                case "lt": sb.Append('<'); break;
                case "gt": sb.Append('>'); break;
                case "quot": sb.Append('"'); break;
                case "apos": sb.Append('\''); break;
                default:
                    var code = entity.StartsWith("#x", StringComparison.Ordinal) ? int.Parse(entity[2..], NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
                        : entity.StartsWith('#') ? int.Parse(entity[1..], NumberStyles.None, CultureInfo.InvariantCulture)
                        : throw new FormatException($"an unknown entity '&{entity};'");
                    sb.Append(char.ConvertFromUtf32(code));
                    break;
            }

            i = semi;
        }

        return sb.ToString();
    }
}
