using System.Text;

namespace DiffKeeper.Core;

/// <summary>
/// The one place that converts between the bytes of a Linux file name and the string DiffKeeper carries it in.
/// A name is bytes; most are UTF-8, but any byte but NUL is allowed. A path string holds the UTF-8 text as
/// usual, and every byte that is not part of valid UTF-8 as the lone low surrogate U+DC00 + byte (U+DC80 ..
/// U+DCFF; "surrogateescape", as Python does). The mapping is lossless both ways: valid UTF-8 never decodes to a
/// lone surrogate, so <c>Encode(Decode(b)) == b</c> for every byte string, and a string that holds no escaped byte
/// is the same text it always was. Strings cross to the kernel only through <see cref="Encode(string)"/> (the
/// P/Invoke marshaller uses it), to the catalog as TEXT or BLOB (docs/store-format.md, "Paths"), and to people
/// through <see cref="Display"/>.
/// </summary>
public static class PathBytes
{
    private const char EscapeBase = '\uDC00';

    /// <summary>The string for the bytes of a name or path (no NUL expected; a NUL is kept as U+0000).</summary>
    public static string Decode(ReadOnlySpan<byte> bytes)
    {
        if (System.Text.Unicode.Utf8.IsValid(bytes))
        {
            return Encoding.UTF8.GetString(bytes);
        }

        var sb = new StringBuilder(bytes.Length);
        while (!bytes.IsEmpty)
        {
            if (Rune.DecodeFromUtf8(bytes, out var rune, out var used) == System.Buffers.OperationStatus.Done)
            {
                sb.Append(rune.ToString());
            }
            else
            {
                for (var i = 0; i < used; i++)
                {
                    sb.Append((char)(EscapeBase + bytes[i]));
                }
            }

            bytes = bytes[used..];
        }

        return sb.ToString();
    }

    /// <summary>True when <paramref name="path"/> holds a byte that is not UTF-8 (it has no exact UTF-8 text form).</summary>
    public static bool HasRawBytes(string path)
    {
        foreach (var c in path)
        {
            if (c is >= '\uDC80' and <= '\uDCFF')
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>The exact bytes of <paramref name="path"/> (inverse of <see cref="Decode"/>).</summary>
    public static byte[] Encode(string path)
    {
        var buffer = new byte[MaxByteCount(path)];
        return buffer.AsSpan(0, Encode(path, buffer)).ToArray();
    }

    /// <summary>An upper bound of the encoded length of <paramref name="path"/>.</summary>
    public static int MaxByteCount(string path) => path.Length * 3;

    /// <summary>Writes the exact bytes of <paramref name="path"/> into <paramref name="output"/> (at least <see cref="MaxByteCount"/> long); returns their count.</summary>
    public static int Encode(string path, Span<byte> output)
    {
        if (!HasSurrogate(path))
        {
            return Encoding.UTF8.GetBytes(path, output);
        }

        var n = 0;
        for (var i = 0; i < path.Length; i++)
        {
            var c = path[i];
            if (c is >= '\uDC80' and <= '\uDCFF')
            {
                output[n++] = (byte)(c - EscapeBase);
            }
            else if (char.IsHighSurrogate(c) && i + 1 < path.Length && char.IsLowSurrogate(path[i + 1]))
            {
                n += new Rune(c, path[i + 1]).EncodeToUtf8(output[n..]);
                i++;
            }
            else
            {
                // A lone surrogate no decoded name holds: written as U+FFFD, as any UTF-8 encoder would.
                n += (char.IsSurrogate(c) ? Rune.ReplacementChar : new Rune(c)).EncodeToUtf8(output[n..]);
            }
        }

        return n;
    }

    /// <summary>
    /// The path as a person should see it on one line: UTF-8 text as is; a byte that is not UTF-8 as <c>\xHH</c>;
    /// control characters (C0 and C1) as <c>\n</c>, <c>\t</c>, <c>\r</c> or <c>\xHH</c>; a backslash as <c>\\</c>. Unambiguous, so
    /// <see cref="ParseDisplay"/> turns it back into the path.
    /// </summary>
    public static string Display(string path)
    {
        if (!NeedsEscape(path))
        {
            return path;
        }

        var sb = new StringBuilder(path.Length + 8);
        foreach (var c in path)
        {
            switch (c)
            {
                case '\\':
                    sb.Append(@"\\");
                    break;
                case '\n':
                    sb.Append(@"\n");
                    break;
                case '\t':
                    sb.Append(@"\t");
                    break;
                case '\r':
                    sb.Append(@"\r");
                    break;
                case < ' ' or '\x7f':
                    sb.Append(@"\x").Append(((int)c).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
                    break;
                case >= '\x80' and <= '\x9f':
                    // C1 controls (terminal escapes too) as their UTF-8 bytes.
                    sb.Append(@"\xc2\x").Append(((int)c).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
                    break;
                case >= '\uDC80' and <= '\uDCFF':
                    sb.Append(@"\x").Append((c - EscapeBase).ToString("x2", System.Globalization.CultureInfo.InvariantCulture));
                    break;
                default:
                    sb.Append(c);
                    break;
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// The path a <see cref="Display"/> string shows, or null when <paramref name="display"/> holds no escape (it is
    /// then the path itself) or is not a valid display string. A <c>\xHH</c> of a byte of 0x80 or more is that raw byte.
    /// </summary>
    public static string? ParseDisplay(string display)
    {
        if (!display.Contains('\\', StringComparison.Ordinal))
        {
            return null;
        }

        var bytes = new List<byte>(display.Length);
        Span<byte> one = stackalloc byte[4];
        for (var i = 0; i < display.Length; i++)
        {
            var c = display[i];
            if (c != '\\')
            {
                if (char.IsHighSurrogate(c) && i + 1 < display.Length)
                {
                    bytes.AddRange(one[..new Rune(c, display[++i]).EncodeToUtf8(one)].ToArray());
                }
                else
                {
                    bytes.AddRange(one[..(char.IsSurrogate(c) ? Rune.ReplacementChar : new Rune(c)).EncodeToUtf8(one)].ToArray());
                }

                continue;
            }

            if (++i >= display.Length)
            {
                return null;
            }

            switch (display[i])
            {
                case '\\':
                    bytes.Add((byte)'\\');
                    break;
                case 'n':
                    bytes.Add((byte)'\n');
                    break;
                case 't':
                    bytes.Add((byte)'\t');
                    break;
                case 'r':
                    bytes.Add((byte)'\r');
                    break;
                case 'x' when i + 2 < display.Length &&
                              byte.TryParse(display.AsSpan(i + 1, 2), System.Globalization.NumberStyles.AllowHexSpecifier, System.Globalization.CultureInfo.InvariantCulture, out var b):
                    bytes.Add(b);
                    i += 2;
                    break;
                default:
                    return null;
            }
        }

        return Decode(bytes.ToArray());
    }

    /// <summary>
    /// Orders paths by their bytes (as <c>ls</c> and <c>sort</c> in the C locale do), not by UTF-16 code units. Without
    /// surrogates the two agree (UTF-8 byte order is code point order), so only such paths are encoded.
    /// </summary>
    public static IComparer<string> ByteOrder { get; } = Comparer<string>.Create(static (a, b) =>
        HasSurrogate(a) || HasSurrogate(b) ? Encode(a).AsSpan().SequenceCompareTo(Encode(b)) : string.CompareOrdinal(a, b));

    private static bool HasSurrogate(string path)
    {
        foreach (var c in path)
        {
            if (char.IsSurrogate(c))
            {
                return true;
            }
        }

        return false;
    }

    private static bool NeedsEscape(string path)
    {
        foreach (var c in path)
        {
            if (c is < ' ' or (>= '\x7f' and <= '\x9f') or '\\' or (>= '\uDC80' and <= '\uDCFF'))
            {
                return true;
            }
        }

        return false;
    }
}
