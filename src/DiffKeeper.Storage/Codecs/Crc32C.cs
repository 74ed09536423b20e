using System.Runtime.Intrinsics.X86;

namespace DiffKeeper.Storage.Codecs;

/// <summary>CRC-32C (Castagnoli), as used for pack records. SSE4.2 when present, a table otherwise.</summary>
public static class Crc32C
{
    private static readonly uint[] Table = BuildTable();

    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);

    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        crc = ~crc;
        if (Sse42.X64.IsSupported)
        {
            ulong c = crc;
            while (data.Length >= 8)
            {
                c = Sse42.X64.Crc32(c, BitConverter.ToUInt64(data));
                data = data[8..];
            }

            crc = (uint)c;
        }

        foreach (var b in data)
        {
            crc = Sse42.IsSupported ? Sse42.Crc32(crc, b) : Table[(crc ^ b) & 0xff] ^ (crc >> 8);
        }

        return ~crc;
    }

    private static uint[] BuildTable()
    {
        var table = new uint[256];
        for (uint i = 0; i < 256; i++)
        {
            var c = i;
            for (var k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0x82F63B78u ^ (c >> 1) : c >> 1;
            }

            table[i] = c;
        }

        return table;
    }
}
