namespace DiffKeeper.Storage;

/// <summary>Unsigned LEB128, the integer encoding of extent maps, delta base lists and bsdiff control streams.</summary>
internal static class Varint
{
    public const int MaxLength = 10;

    /// <summary>Writes <paramref name="value"/> at the start of <paramref name="span"/> (at least <see cref="MaxLength"/> long); returns the bytes written.</summary>
    public static int Write(Span<byte> span, ulong value)
    {
        var k = 0;
        while (value >= 0x80)
        {
            span[k++] = (byte)(value | 0x80);
            value >>= 7;
        }

        span[k++] = (byte)value;
        return k;
    }

    /// <summary>Reads one value at <paramref name="offset"/> and moves past it; false when the bytes end first or it runs past 64 bits.</summary>
    public static bool TryRead(ReadOnlySpan<byte> span, ref int offset, out ulong value)
    {
        value = 0;
        for (var shift = 0; shift < 64 && offset < span.Length; shift += 7)
        {
            var b = span[offset++];
            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }
}
