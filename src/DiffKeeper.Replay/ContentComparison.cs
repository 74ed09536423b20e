using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Replay;

/// <summary>How a path's bytes differ between two states.</summary>
public enum ContentDifference
{
    /// <summary>Not two files' contents (a directory, a symlink, a kind change).</summary>
    None,
    /// <summary>The bytes are equal (the versions were stored differently, for example with holes).</summary>
    Same,
    /// <summary>Text: <see cref="ContentComparison.Lines"/> holds the line diff.</summary>
    Text,
    /// <summary>Binary (a NUL byte in the first 8000 bytes of either side): <see cref="ContentComparison.Ranges"/>.</summary>
    Binary,
    /// <summary>Too large or too different to diff; only the sizes are known to differ.</summary>
    TooLarge,
}

/// <summary>
/// The content side of an <see cref="EntryChange"/>: an added file is compared with nothing, a removed one with
/// nothing after it. Each side is read whole (and checked, as export checks it) when at most
/// <see cref="MaxBytes"/>; larger files are only said to differ.
/// </summary>
public sealed record ContentComparison(ContentDifference Difference, LineDiff? Lines, IReadOnlyList<(long Offset, long Length)> Ranges, int RangeCount, long RangeBytes, string? Reason)
{
    public const long MaxBytes = 16 << 20;

    /// <summary>Binary ranges listed at most; <see cref="RangeCount"/> and <see cref="RangeBytes"/> count them all.</summary>
    public const int MaxRanges = 100;

    public static ContentComparison Of(TraceReader reader, SessionInfo beforeSession, SessionInfo afterSession, EntryChange change)
    {
        var before = change.Before is { Kind: EntryKind.File } b ? b : null;
        var after = change.After is { Kind: EntryKind.File } a ? a : null;
        if (change.KindChanged || (before is null && after is null))
        {
            return new(ContentDifference.None, null, [], 0, 0, null);
        }

        if (before is not null && after is not null && !change.ContentMayDiffer)
        {
            return new(ContentDifference.Same, null, [], 0, 0, null);
        }

        if ((before?.Size ?? 0) > MaxBytes || (after?.Size ?? 0) > MaxBytes)
        {
            return new(ContentDifference.TooLarge, null, [], 0, 0, $"above the {MaxBytes >> 20} MiB limit for comparing contents");
        }

        var x = before is null ? [] : VersionContent.ReadAll(reader, beforeSession, before);
        var y = after is null ? [] : VersionContent.ReadAll(reader, afterSession, after);
        if (before is not null && after is not null && x.AsSpan().SequenceEqual(y))
        {
            return new(ContentDifference.Same, null, [], 0, 0, null);
        }

        if (IsBinary(x) || IsBinary(y))
        {
            return Binary(x, y);
        }

        var lines = LineDiff.Compute(x, y);
        return lines is null
            ? new(ContentDifference.TooLarge, null, [], 0, 0, "too many changed lines to diff")
            : new(ContentDifference.Text, lines, [], 0, 0, null);
    }

    // git's rule; GNU diff looks for a NUL in its first read buffer.
    private static bool IsBinary(byte[] data) => data.AsSpan(0, Math.Min(data.Length, 8000)).Contains((byte)0);

    /// <summary>Maximal runs of differing bytes, and the tail one side has and the other not.</summary>
    private static ContentComparison Binary(byte[] x, byte[] y)
    {
        var ranges = new List<(long, long)>();
        int count = 0;
        long bytes = 0;
        void Add(long offset, long length)
        {
            count++;
            bytes += length;
            if (ranges.Count < MaxRanges)
            {
                ranges.Add((offset, length));
            }
        }

        var common = Math.Min(x.Length, y.Length);
        for (var i = 0; i < common;)
        {
            var differ = x.AsSpan(i, common - i).CommonPrefixLength(y.AsSpan(i, common - i));
            i += differ;
            if (i >= common)
            {
                break;
            }

            var start = i;
            while (i < common && x[i] != y[i])
            {
                i++;
            }

            Add(start, i - start);
        }

        if (x.Length != y.Length)
        {
            Add(common, Math.Abs(x.Length - y.Length));
        }

        return new(ContentDifference.Binary, null, ranges, count, bytes, null);
    }
}
