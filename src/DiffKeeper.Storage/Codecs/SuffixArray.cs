using System.Buffers;
using System.Numerics;
using System.Runtime.Intrinsics.X86;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// Suffix array construction by induced sorting (SA-IS, Nong, Zhang and Chan 2009): linear time, and beyond the
/// result only a type byte per symbol and two bucket tables per recursion level, all pooled. The end of the
/// text acts as a sentinel smaller than every symbol, so a suffix that is a prefix of another sorts first.
/// </summary>
public static class SuffixArray
{
    /// <summary>Returns the start positions of the suffixes of <paramref name="text"/> in lexicographic order.</summary>
    public static int[] Build(ReadOnlySpan<byte> text)
    {
        var sa = new int[text.Length];
        Build(text, sa);
        return sa;
    }

    /// <summary>
    /// Writes the suffix array of <paramref name="text"/> into <paramref name="sa"/>, which must be exactly as long
    /// as the text.
    /// </summary>
    public static void Build(ReadOnlySpan<byte> text, Span<int> sa)
    {
        if (sa.Length != text.Length)
        {
            throw new ArgumentException($"the suffix array needs {text.Length} entries, got {sa.Length}", nameof(sa));
        }

        Sort(text, sa, 256);
    }

    private static int At<T>(ReadOnlySpan<T> s, int i)
        where T : unmanaged, IBinaryInteger<T> => int.CreateTruncating(s[i]);

    private static bool IsLms(ReadOnlySpan<byte> isS, int i) => i > 0 && isS[i] != 0 && isS[i - 1] == 0;

    // One level of SA-IS over symbols 0..k-1. sa is both the output and the work area of this level; the reduced
    // problem lives in sa too (names in the upper half, its suffix array in the lower part).
    private static void Sort<T>(ReadOnlySpan<T> s, Span<int> sa, int k)
        where T : unmanaged, IBinaryInteger<T>
    {
        var n = s.Length;
        if (n <= 1)
        {
            if (n == 1)
            {
                sa[0] = 0;
            }

            return;
        }

        var typeArray = ArrayPool<byte>.Shared.Rent(n);
        var countArray = ArrayPool<int>.Shared.Rent(k);
        var bucketArray = ArrayPool<int>.Shared.Rent(k);
        try
        {
            // isS[i] != 0: suffix i is smaller than suffix i + 1 (S type); the last suffix is larger than the
            // empty one after it (L type).
            var isS = typeArray.AsSpan(0, n);
            isS[n - 1] = 0;
            // Branch-free: on random bytes a < b is a coin toss, and a mispredicted branch per byte costs more
            // than the rest of the loop.
            for (var i = n - 2; i >= 0; i--)
            {
                long a = At(s, i), b = At(s, i + 1);
                var less = (int)((ulong)(a - b) >> 63);
                var equal = (int)((ulong)((a ^ b) - 1) >> 63);
                isS[i] = (byte)(less | (equal & isS[i + 1]));
            }

            var counts = countArray.AsSpan(0, k);
            var bucket = bucketArray.AsSpan(0, k);
            counts.Clear();
            for (var i = 0; i < n; i++)
            {
                counts[At(s, i)]++;
            }

            // Stage 1: sort the LMS substrings by inducing from their unsorted positions at the bucket ends.
            sa.Fill(-1);
            BucketEnds(counts, bucket);
            for (var i = 1; i < n; i++)
            {
                if (IsLms(isS, i))
                {
                    sa[--bucket[At(s, i)]] = i;
                }
            }

            Induce(s, sa, isS, counts, bucket);

            // Move the sorted LMS positions to the front and name each LMS substring by its rank among the
            // distinct ones; names go to sa[m + pos / 2] (LMS positions are at least two apart, so these differ).
            var m = 0;
            for (var i = 0; i < n; i++)
            {
                var p = sa[i];
                if (IsLms(isS, p))
                {
                    sa[m++] = p;
                }
            }

            // Each LMS substring's length (through the next LMS position) goes to sa[m + pos / 2] first; two are
            // equal when their lengths and symbols are (their types then agree too: both end on an S position).
            // The last one runs into the sentinel and equals no other.
            sa[m..].Fill(-1);
            for (int i = n - 1, next = n; i >= 1; i--)
            {
                if (IsLms(isS, i))
                {
                    sa[m + (i >> 1)] = next - i + 1;
                    next = i;
                }
            }

            var names = 0;
            int previous = -1, previousLength = 0;
            for (var i = 0; i < m; i++)
            {
                var p = sa[i];
                var length = sa[m + (p >> 1)];
                if (length != previousLength || p + length > n || previous + length > n
                    || !s.Slice(p, length).SequenceEqual(s.Slice(previous, length)))
                {
                    names++;
                    previous = p;
                    previousLength = length;
                }

                sa[m + (p >> 1)] = names - 1;
            }

            // The reduced text (names in text order) is gathered at the top of sa.
            for (int i = n - 1, j = n - 1; i >= m; i--)
            {
                if (sa[i] >= 0)
                {
                    sa[j--] = sa[i];
                }
            }

            var reduced = sa[(n - m)..];
            var reducedSa = sa[..m];
            if (names < m)
            {
                Sort<int>(reduced, reducedSa, names);
            }
            else
            {
                for (var i = 0; i < m; i++)
                {
                    reducedSa[reduced[i]] = i;
                }
            }

            // Stage 2: the LMS suffixes in sorted order, placed at their bucket ends, induce the whole array.
            for (int i = 1, j = 0; i < n; i++)
            {
                if (IsLms(isS, i))
                {
                    reduced[j++] = i;
                }
            }

            for (var i = 0; i < m; i++)
            {
                reducedSa[i] = reduced[reducedSa[i]];
            }

            sa[m..].Fill(-1);
            BucketEnds(counts, bucket);
            for (var i = m - 1; i >= 0; i--)
            {
                var p = sa[i];
                sa[i] = -1;
                sa[--bucket[At(s, p)]] = p;
            }

            Induce(s, sa, isS, counts, bucket);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(typeArray);
            ArrayPool<int>.Shared.Return(countArray);
            ArrayPool<int>.Shared.Return(bucketArray);
        }
    }

    // From LMS suffixes at their bucket ends: L-type suffixes left to right from the bucket heads, then S-type
    // suffixes right to left from the bucket ends. This is where the time goes: each step reads the text at a
    // random place, so the text of the entry PrefetchDistance ahead is prefetched, and the type of j - 1 comes
    // from comparing it with the next symbol (same cache line) unless they are equal. Indexes are not bounds
    // checked: every one is a suffix position (0 .. n-1) read back from sa, or a bucket slot, which stays inside
    // its bucket because each bucket receives exactly as many suffixes as start with its symbol.
    private static unsafe void Induce<T>(ReadOnlySpan<T> s, Span<int> sa, ReadOnlySpan<byte> isS, ReadOnlySpan<int> counts, Span<int> bucket)
        where T : unmanaged, IBinaryInteger<T>
    {
        const int PrefetchDistance = 24;
        var n = s.Length;
        BucketHeads(counts, bucket);

        // The virtual sentinel sorts first and induces the last suffix, which is always L type.
        sa[bucket[At(s, n - 1)]++] = n - 1;
        fixed (T* text = s)
        fixed (byte* types = isS)
        fixed (int* suffixes = sa)
        fixed (int* slots = bucket)
        {
            var prefetch = Sse.IsSupported;
            for (var i = 0; i < n; i++)
            {
                if (prefetch && i + PrefetchDistance < n)
                {
                    Sse.Prefetch0(text + suffixes[i + PrefetchDistance] - 1);
                }

                var j = suffixes[i] - 1;
                if (j < 0)
                {
                    continue;
                }

                int c = int.CreateTruncating(text[j]), next = int.CreateTruncating(text[j + 1]);
                if (c > next || (c == next && types[j] == 0))
                {
                    suffixes[slots[c]++] = j;
                }
            }

            BucketEnds(counts, bucket);
            for (var i = n - 1; i >= 0; i--)
            {
                if (prefetch && i >= PrefetchDistance)
                {
                    Sse.Prefetch0(text + suffixes[i - PrefetchDistance] - 1);
                }

                var j = suffixes[i] - 1;
                if (j < 0)
                {
                    continue;
                }

                int c = int.CreateTruncating(text[j]), next = int.CreateTruncating(text[j + 1]);
                if (c < next || (c == next && types[j] != 0))
                {
                    suffixes[--slots[c]] = j;
                }
            }
        }
    }

    private static void BucketHeads(ReadOnlySpan<int> counts, Span<int> bucket)
    {
        var sum = 0;
        for (var c = 0; c < counts.Length; c++)
        {
            bucket[c] = sum;
            sum += counts[c];
        }
    }

    private static void BucketEnds(ReadOnlySpan<int> counts, Span<int> bucket)
    {
        var sum = 0;
        for (var c = 0; c < counts.Length; c++)
        {
            sum += counts[c];
            bucket[c] = sum;
        }
    }
}
