namespace DiffKeeper.Storage.Chunking;

/// <summary>
/// FastCDC content-defined chunking (Xia et al. 2016) with normalized chunking, level 2. The gear table and the
/// sizes are fixed: the same bytes always give the same chunks, in every run and on every machine, which is what
/// makes deduplication across versions and sessions work. Changing anything here changes every chunk boundary
/// (docs/store-format.md, "Chunking").
/// </summary>
public static class FastCdc
{
    public const int MinSize = 16 * 1024;
    public const int AverageSize = 64 * 1024;
    public const int MaxSize = 256 * 1024;

    // 18 and 14 one-bits: harder to cut before the average size, easier after it (normalization level 2).
    private const ulong MaskSmall = 0xA494_9292_5249_0000;
    private const ulong MaskLarge = 0x9122_2448_8911_0000;

    private static readonly ulong[] Gear = BuildGear();

    /// <summary>Length of the chunk that starts at the beginning of <paramref name="data"/>.</summary>
    public static int NextCut(ReadOnlySpan<byte> data) => data.Length <= MinSize ? data.Length : Search(data, MinSize, 0);

    /// <summary>
    /// The same as <see cref="NextCut(ReadOnlySpan{byte})"/> when the chunk is known to be at least
    /// <paramref name="atLeast"/> bytes long (its first bytes are a chunk cut before, which ended there because the data
    /// did, or at a cut point on its last byte: a file growing by appends). Whether a byte is a cut point depends only
    /// on its distance from the start and the 64 bytes up to it (the fingerprint shifts one bit a byte), so the search
    /// starts at the chunk's old last byte with the fingerprint rebuilt from the 64 bytes before it.
    /// </summary>
    public static int NextCut(ReadOnlySpan<byte> data, int atLeast)
    {
        var n = Math.Min(data.Length, MaxSize);
        var from = atLeast - 1; // the old chunk's last byte: it may be a cut point
        if (from - 64 < MinSize || n <= MinSize)
        {
            return NextCut(data);
        }

        if (atLeast >= n)
        {
            return n;
        }

        var gear = Gear;
        ulong fp = 0;
        for (var i = from - 64; i < from; i++)
        {
            fp = (fp << 1) + gear[data[i]];
        }

        return Search(data, from, fp);
    }

    // From position `from` (at least MinSize) with the fingerprint of the bytes before it: the first cut point, or the
    // data's end (at most MaxSize). Positions below the average size need the harder mask.
    private static int Search(ReadOnlySpan<byte> data, int from, ulong fp)
    {
        var n = Math.Min(data.Length, MaxSize);
        var normal = n < AverageSize ? n : AverageSize;
        var gear = Gear;
        var i = from;
        for (; i < normal; i++)
        {
            fp = (fp << 1) + gear[data[i]];
            if ((fp & MaskSmall) == 0)
            {
                return i + 1;
            }
        }

        for (; i < n; i++)
        {
            fp = (fp << 1) + gear[data[i]];
            if ((fp & MaskLarge) == 0)
            {
                return i + 1;
            }
        }

        return n;
    }

    private static ulong[] BuildGear()
    {
        // SplitMix64 from a fixed seed: deterministic, well mixed, no table to paste.
        var table = new ulong[256];
        ulong x = 0x4469_6666_4B65_6570; // "DiffKeep"
        for (var i = 0; i < table.Length; i++)
        {
            x += 0x9E37_79B9_7F4A_7C15;
            var z = x;
            z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9;
            z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB;
            table[i] = z ^ (z >> 31);
        }

        return table;
    }
}
