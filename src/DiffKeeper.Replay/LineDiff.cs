using System.Globalization;
using System.Text;

namespace DiffKeeper.Replay;

/// <summary>
/// A line diff of two byte strings, printed as GNU <c>diff -u</c> prints it: Myers' O((N+M)D) algorithm in linear
/// space (middle snake, divide and conquer), then GNU diff's <c>shift_boundaries</c>, which slides each run of
/// inserted or deleted lines as far down as it can go unless that merges it with another run, so that where an
/// edit is ambiguous (a line added among equal lines) the hunk is the one diff prints. A line is its bytes with
/// its '\n'; a last line without one differs from the same text with one and is followed by
/// "\ No newline at end of file". GNU diff's other heuristics (discarding lines frequent in the other file, giving
/// up on optimality past a cost) are not copied, so on large, very different inputs the hunks can be cut
/// differently from diff's while describing the same change in as few lines or fewer.
/// </summary>
public sealed class LineDiff
{
    private readonly byte[] _a;
    private readonly byte[] _b;
    private readonly (int Start, int Length)[] _linesA;
    private readonly (int Start, int Length)[] _linesB;
    private readonly bool[] _changedA; // index i + 1 is line i; both ends are false sentinels
    private readonly bool[] _changedB;

    private LineDiff(byte[] a, byte[] b, (int, int)[] linesA, (int, int)[] linesB, bool[] changedA, bool[] changedB)
    {
        _a = a;
        _b = b;
        _linesA = linesA;
        _linesB = linesB;
        _changedA = changedA;
        _changedB = changedB;
        Deletions = changedA.Count(c => c);
        Insertions = changedB.Count(c => c);
    }

    public int Insertions { get; }

    public int Deletions { get; }

    public bool Same => Insertions == 0 && Deletions == 0;

    /// <summary>The diff of <paramref name="a"/> and <paramref name="b"/>, or null when it takes more than
    /// <paramref name="maxEdits"/> inserted plus deleted lines (the cost grows with that number times the lines).</summary>
    public static LineDiff? Compute(byte[] a, byte[] b, int maxEdits = 20_000)
    {
        var linesA = Split(a);
        var linesB = Split(b);
        var classes = new Dictionary<string, int>(StringComparer.Ordinal);
        var ea = Classify(a, linesA, classes);
        var eb = Classify(b, linesB, classes);
        var changedA = new bool[linesA.Length + 2];
        var changedB = new bool[linesB.Length + 2];
        var search = new MiddleSnakeSearch(ea, eb, changedA, changedB, maxEdits);
        if (!search.Run())
        {
            return null;
        }

        ShiftBoundaries(ea, changedA, changedB);
        ShiftBoundaries(eb, changedB, changedA);
        return new LineDiff(a, b, linesA, linesB, changedA, changedB);
    }

    /// <summary>The hunks, each "@@ -l,s +l,s @@" and its lines, exactly as GNU diff -u prints them after its two header lines.</summary>
    public void WriteHunks(Stream output, int context = 3)
    {
        var blocks = Blocks();
        for (var first = 0; first < blocks.Count;)
        {
            var last = first;
            while (last + 1 < blocks.Count && blocks[last + 1].A - (blocks[last].A + blocks[last].DeletedCount) <= 2 * context)
            {
                last++;
            }

            var aStart = Math.Max(0, blocks[first].A - context);
            var bStart = blocks[first].B - (blocks[first].A - aStart);
            var aEndChange = blocks[last].A + blocks[last].DeletedCount;
            var aEnd = Math.Min(_linesA.Length, aEndChange + context);
            var bEnd = blocks[last].B + blocks[last].InsertedCount + (aEnd - aEndChange);
            WriteAscii(output, $"@@ -{Range(aStart, aEnd - aStart)} +{Range(bStart, bEnd - bStart)} @@\n");
            var pos = aStart;
            for (var k = first; k <= last; k++)
            {
                var (ba, bb, deleted, inserted) = blocks[k];
                for (; pos < ba; pos++)
                {
                    WriteLine(output, ' ', _a, _linesA, pos);
                }

                for (var i = ba; i < ba + deleted; i++)
                {
                    WriteLine(output, '-', _a, _linesA, i);
                }

                for (var j = bb; j < bb + inserted; j++)
                {
                    WriteLine(output, '+', _b, _linesB, j);
                }

                pos = ba + deleted;
            }

            for (; pos < aEnd; pos++)
            {
                WriteLine(output, ' ', _a, _linesA, pos);
            }

            first = last + 1;
        }
    }

    /// <summary>Runs of changed lines: where they start in each input and how many lines each side has.</summary>
    private List<(int A, int B, int DeletedCount, int InsertedCount)> Blocks()
    {
        var blocks = new List<(int, int, int, int)>();
        int i = 0, j = 0, n = _linesA.Length, m = _linesB.Length;
        while (i < n || j < m)
        {
            if (i < n && j < m && !_changedA[i + 1] && !_changedB[j + 1])
            {
                i++;
                j++;
                continue;
            }

            int a0 = i, b0 = j;
            while (i < n && _changedA[i + 1])
            {
                i++;
            }

            while (j < m && _changedB[j + 1])
            {
                j++;
            }

            blocks.Add((a0, b0, i - a0, j - b0));
        }

        return blocks;
    }

    // diff's form: an empty range is "L,0" with L the line before it; one line is "L"; else "L,N".
    private static string Range(int start, int count) => count switch
    {
        0 => string.Create(CultureInfo.InvariantCulture, $"{start},0"),
        1 => string.Create(CultureInfo.InvariantCulture, $"{start + 1}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{start + 1},{count}"),
    };

    private static void WriteLine(Stream output, char prefix, byte[] text, (int Start, int Length)[] lines, int index)
    {
        output.WriteByte((byte)prefix);
        var (start, length) = lines[index];
        output.Write(text, start, length);
        if (length == 0 || text[start + length - 1] != '\n')
        {
            WriteAscii(output, "\n\\ No newline at end of file\n");
        }
    }

    private static void WriteAscii(Stream output, string text) => output.Write(Encoding.ASCII.GetBytes(text));

    private static (int Start, int Length)[] Split(byte[] text)
    {
        var lines = new List<(int, int)>();
        var start = 0;
        while (start < text.Length)
        {
            var nl = Array.IndexOf(text, (byte)'\n', start);
            var end = nl < 0 ? text.Length : nl + 1;
            lines.Add((start, end - start));
            start = end;
        }

        return [.. lines];
    }

    // Latin-1 maps each byte to one char, so equal strings are equal bytes, whatever the encoding of the text.
    private static int[] Classify(byte[] text, (int Start, int Length)[] lines, Dictionary<string, int> classes)
    {
        var ids = new int[lines.Length];
        for (var i = 0; i < lines.Length; i++)
        {
            var key = Encoding.Latin1.GetString(text, lines[i].Start, lines[i].Length);
            if (!classes.TryGetValue(key, out var id))
            {
                id = classes.Count;
                classes.Add(key, id);
            }

            ids[i] = id;
        }

        return ids;
    }

    /// <summary>
    /// GNU diff's shift_boundaries (analyze.c), on <paramref name="changed"/> (line i at i + 1): each run of
    /// changes moves up while the line before it equals its last line, then down while its first line equals
    /// the line after it, merging with runs it meets; a run that merged nothing ends as far down as it can, and a
    /// merged run is moved back to line up with a run of changes in the other file where it can.
    /// </summary>
    private static void ShiftBoundaries(int[] equivs, bool[] changed, bool[] otherChanged)
    {
        var iEnd = equivs.Length;
        int i = 0, j = 0;
        while (true)
        {
            while (i < iEnd && !changed[i + 1])
            {
                while (otherChanged[j++ + 1])
                {
                }

                i++;
            }

            if (i == iEnd)
            {
                break;
            }

            var start = i;
            while (changed[++i + 1])
            {
            }

            while (otherChanged[j + 1])
            {
                j++;
            }

            int runLength, corresponding;
            do
            {
                runLength = i - start;
                while (start > 0 && equivs[start - 1] == equivs[i - 1])
                {
                    changed[--start + 1] = true;
                    changed[--i + 1] = false;
                    while (changed[start - 1 + 1])
                    {
                        start--;
                    }

                    while (otherChanged[--j + 1])
                    {
                    }
                }

                corresponding = otherChanged[j - 1 + 1] ? i : iEnd;
                while (i != iEnd && equivs[start] == equivs[i])
                {
                    changed[start++ + 1] = false;
                    changed[i++ + 1] = true;
                    while (changed[i + 1])
                    {
                        i++;
                    }

                    while (otherChanged[++j + 1])
                    {
                        corresponding = i;
                    }
                }
            }
            while (runLength != i - start);

            while (corresponding < i)
            {
                changed[--start + 1] = true;
                changed[--i + 1] = false;
                while (otherChanged[--j + 1])
                {
                }
            }
        }
    }

    /// <summary>Myers' linear-space search: marks the lines of a shortest edit script as changed.</summary>
    private sealed class MiddleSnakeSearch(int[] a, int[] b, bool[] changedA, bool[] changedB, int maxEdits)
    {
        private readonly int[] _forward = new int[a.Length + b.Length + 5];
        private readonly int[] _backward = new int[a.Length + b.Length + 5];
        private bool _top = true;

        public bool Run()
        {
            try
            {
                Compare(0, a.Length, 0, b.Length);
                return true;
            }
            catch (TooExpensive)
            {
                return false;
            }
        }

        private void Compare(int aLo, int aHi, int bLo, int bHi)
        {
            while (aLo < aHi && bLo < bHi && a[aLo] == b[bLo])
            {
                aLo++;
                bLo++;
            }

            while (aLo < aHi && bLo < bHi && a[aHi - 1] == b[bHi - 1])
            {
                aHi--;
                bHi--;
            }

            if (aLo == aHi)
            {
                for (var j = bLo; j < bHi; j++)
                {
                    changedB[j + 1] = true;
                }

                return;
            }

            if (bLo == bHi)
            {
                for (var i = aLo; i < aHi; i++)
                {
                    changedA[i + 1] = true;
                }

                return;
            }

            var (x, y, u, v) = MiddleSnake(aLo, aHi, bLo, bHi);
            Compare(aLo, x, bLo, y);
            Compare(u, aHi, v, bHi);
        }

        /// <summary>The snake (x, y) to (u, v) in the middle of a shortest path; both halves around it are smaller.</summary>
        private (int X, int Y, int U, int V) MiddleSnake(int aLo, int aHi, int bLo, int bHi)
        {
            int n = aHi - aLo, m = bHi - bLo, delta = n - m;
            var odd = (delta & 1) != 0;
            var offset = (n + m + 1) / 2 + 1;
            var limit = (n + m + 1) / 2;
            if (_top)
            {
                // The first search's depth is half the whole script's length; the halves below are cheaper.
                limit = Math.Min(limit, maxEdits / 2 + 1);
                _top = false;
            }

            var vf = _forward;
            var vb = _backward;
            vf[offset + 1] = 0;
            vb[offset + 1] = 0;
            for (var d = 0; d <= limit; d++)
            {
                for (var k = -d; k <= d; k += 2)
                {
                    var x = k == -d || (k != d && vf[offset + k - 1] < vf[offset + k + 1]) ? vf[offset + k + 1] : vf[offset + k - 1] + 1;
                    var y = x - k;
                    int x0 = x, y0 = y;
                    while (x < n && y < m && a[aLo + x] == b[bLo + y])
                    {
                        x++;
                        y++;
                    }

                    vf[offset + k] = x;
                    var kb = delta - k;
                    if (odd && kb >= -(d - 1) && kb <= d - 1 && x + vb[offset + kb] >= n)
                    {
                        return (aLo + x0, bLo + y0, aLo + x, bLo + y);
                    }
                }

                for (var k = -d; k <= d; k += 2)
                {
                    var x = k == -d || (k != d && vb[offset + k - 1] < vb[offset + k + 1]) ? vb[offset + k + 1] : vb[offset + k - 1] + 1;
                    var y = x - k;
                    int x0 = x, y0 = y;
                    while (x < n && y < m && a[aHi - x - 1] == b[bHi - y - 1])
                    {
                        x++;
                        y++;
                    }

                    vb[offset + k] = x;
                    var kf = delta - k;
                    if (!odd && kf >= -d && kf <= d && x + vf[offset + kf] >= n)
                    {
                        return (aHi - x, bHi - y, aHi - x0, bHi - y0);
                    }
                }
            }

            throw new TooExpensive();
        }
    }

    private sealed class TooExpensive : Exception;
}
