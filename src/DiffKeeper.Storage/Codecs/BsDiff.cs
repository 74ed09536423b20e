using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// A bsdiff-style delta codec (the idea of Colin Percival's bsdiff 4, in a format of DiffKeeper's own):
/// a suffix array of the old bytes (<see cref="SuffixArray"/>, SA-IS), greedy longest matches extended
/// approximately forwards and backwards, and three streams: control triples, diff bytes (new minus old, byte by
/// byte, over the approximate matches: mostly zeros) and extra bytes (new bytes copied verbatim), each compressed
/// with zstd when that is smaller.
/// </summary>
/// <remarks>
/// <para>Payload format (all integers little-endian; the spec is "bsdiff payload (codec 3)" in
/// docs/store-format.md):</para>
/// <code>
///  0  4  magic "DKBS" (44 4B 42 53)
///  4  1  format version, 1
///  5  1  flags: bit 0 control, bit 1 diff, bit 2 extra stream is one zstd frame (else raw); other bits 0
///  6  2  reserved, 0
///  8  4  new length N
/// 12  8  control stream: raw length, stored length (u32 each)
/// 20  8  diff stream: raw length, stored length
/// 28  8  extra stream: raw length, stored length
/// 36     control, diff and extra streams back to back; the payload ends exactly after them
/// </code>
/// <para>The control stream is a sequence of triples of LEB128 varints: seek (zig-zag signed: move the old cursor,
/// which starts at 0), add (output old[cursor + i] + diff[next] for i &lt; add, then advance the cursor by add)
/// and extra (output the next extra bytes). Every triple outputs at least one byte; the old range of an add lies
/// inside the old bytes. diff raw length + extra raw length = N; control raw length ≤ N / 2 + 32 (the encoder
/// falls back to one all-extra triple rather than exceed it).</para>
/// <para>Limits: old and new up to <see cref="Array.MaxLength"/> bytes; <see cref="Diff"/> takes about 5 to 6 bytes of
/// memory per old byte, 2 per new byte and 2.3 MiB of tables, all pooled, and linear time for the suffix array.</para>
/// <para>Patching trusts nothing in the payload: every length is checked against the expected output length
/// before any allocation, every control triple against the old bytes and the streams, and damage is reported as
/// an <see cref="InvalidDataException"/> (or <c>false</c> from <see cref="TryPatch"/>) with the offending field.
/// Besides the output it rents at most control raw length + min(diff, extra) raw length ≤ N + 32 bytes: the larger
/// of the diff and extra streams is decoded into the tail of the output and consumed in place.</para>
/// </remarks>
public static class BsDiff
{
    /// <summary>zstd level for the three streams.</summary>
    public const int DefaultLevel = 3;

    /// <summary>Bytes before the streams.</summary>
    public const int HeaderSize = 36;

    /// <summary>The payload format version this code writes and reads.</summary>
    public const byte FormatVersion = 1;

    private const byte ControlZstd = 1;
    private const byte DiffZstd = 2;
    private const byte ExtraZstd = 4;

    // A match of the scan position no better than the current alignment is skipped over down to this many bytes:
    // without it long repeats (runs of zeros, duplicated blocks) make the scan quadratic.
    private const int LongMatchSkip = 256;

    private const int BucketCount = 1 << 16;

    private const int TrigramWords = (1 << 24) / 64;

    private static ReadOnlySpan<byte> Magic => "DKBS"u8;

    /// <summary>The largest control stream a payload of <paramref name="newLength"/> output bytes may have.</summary>
    public static long MaxControlLength(int newLength) => (newLength / 2) + 32L;

    /// <summary>Encodes <paramref name="newData"/> as a patch against <paramref name="oldData"/>.</summary>
    public static byte[] Diff(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> newData, int level = DefaultLevel)
    {
        var n = newData.Length;
        var saArray = ArrayPool<int>.Shared.Rent(oldData.Length);
        var bucketArray = ArrayPool<int>.Shared.Rent(BucketCount + 1);
        var trigramArray = ArrayPool<ulong>.Shared.Rent(TrigramWords);
        var diffArray = ArrayPool<byte>.Shared.Rent(n);
        var extraArray = ArrayPool<byte>.Shared.Rent(n);
        try
        {
            var sa = saArray.AsSpan(0, oldData.Length);
            SuffixArray.Build(oldData, sa);
            var buckets = bucketArray.AsSpan(0, BucketCount + 1);
            BuildBuckets(oldData, buckets);
            var trigrams = trigramArray.AsSpan(0, TrigramWords);
            BuildTrigrams(oldData, trigrams);

            var control = new ArrayBufferWriter<byte>(64);
            var index = new OldIndex(sa, buckets, trigrams);
            var (diffLength, extraLength) = Match(oldData, newData, index, control, diffArray, extraArray);
            if (control.WrittenCount > MaxControlLength(n))
            {
                // Too fragmented to pay: one triple, everything extra.
                control.Clear();
                WriteTriple(control, 0, 0, n);
                newData.CopyTo(extraArray);
                diffLength = 0;
                extraLength = n;
            }

            return Assemble(n, control.WrittenSpan, diffArray.AsSpan(0, diffLength), extraArray.AsSpan(0, extraLength), level);
        }
        finally
        {
            ArrayPool<int>.Shared.Return(saArray);
            ArrayPool<int>.Shared.Return(bucketArray);
            ArrayPool<ulong>.Shared.Return(trigramArray);
            ArrayPool<byte>.Shared.Return(diffArray);
            ArrayPool<byte>.Shared.Return(extraArray);
        }
    }

    /// <summary>
    /// Rebuilds the new bytes from <paramref name="oldData"/> and a patch made by <see cref="Diff"/>.
    /// </summary>
    /// <exception cref="InvalidDataException">The patch is damaged or does not produce exactly
    /// <paramref name="expectedLength"/> bytes from these old bytes.</exception>
    public static byte[] Patch(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> patch, int expectedLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(expectedLength);
        var result = new byte[expectedLength];
        Patch(oldData, patch, result);
        return result;
    }

    /// <summary>Rebuilds the new bytes into <paramref name="destination"/>, which must be exactly as long as they are.</summary>
    /// <exception cref="InvalidDataException">The patch is damaged or does not produce exactly
    /// <paramref name="destination"/>.Length bytes from these old bytes.</exception>
    public static void Patch(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> patch, Span<byte> destination)
    {
        if (!TryPatch(oldData, patch, destination, out var error))
        {
            throw new InvalidDataException($"bsdiff patch ({patch.Length} bytes) is damaged: {error}");
        }
    }

    /// <summary>
    /// Rebuilds the new bytes into <paramref name="destination"/>; false (with the reason) when the patch is damaged
    /// or does not produce exactly <paramref name="destination"/>.Length bytes. <paramref name="destination"/> may
    /// have been written to when this returns false. It must not overlap the other arguments.
    /// </summary>
    public static bool TryPatch(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> patch, Span<byte> destination, out string error)
    {
        error = CheckHeader(patch, destination.Length, out var header);
        if (error.Length != 0)
        {
            return false;
        }

        var n = destination.Length;
        var ctrlStored = patch.Slice(HeaderSize, header.ControlStored);
        var diffStored = patch.Slice(HeaderSize + header.ControlStored, header.DiffStored);
        var extraStored = patch.Slice(HeaderSize + header.ControlStored + header.DiffStored, header.ExtraStored);

        // The larger of diff and extra is decoded into the tail of the output: the write position never passes
        // the read position there (see ApplyTriples).
        var diffInTail = header.DiffRaw >= header.ExtraRaw;
        var small = diffInTail ? header.ExtraRaw : header.DiffRaw;
        var scratchArray = ArrayPool<byte>.Shared.Rent(header.ControlRaw + small);
        try
        {
            var control = scratchArray.AsSpan(0, header.ControlRaw);
            var smallStream = scratchArray.AsSpan(header.ControlRaw, small);
            var tail = destination[(n - (diffInTail ? header.DiffRaw : header.ExtraRaw))..];
            if (!Decode("control", ctrlStored, (header.Flags & ControlZstd) != 0, control, out error)
                || !Decode("diff", diffStored, (header.Flags & DiffZstd) != 0, diffInTail ? tail : smallStream, out error)
                || !Decode("extra", extraStored, (header.Flags & ExtraZstd) != 0, diffInTail ? smallStream : tail, out error))
            {
                return false;
            }

            error = ApplyTriples(oldData, control, diffInTail, smallStream, destination, header);
            return error.Length == 0;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(scratchArray);
        }
    }

    // The bsdiff scan: find the longest match of the text at scan; keep extending the current alignment
    // (lastOffset) while it explains the new bytes nearly as well; when a match beats it by more than 8 bytes,
    // close the region since lastScan: extend the previous match forwards and the new one backwards as far as
    // they agree on more than half the bytes, settle their overlap, and emit add (approximate match) + extra.
    private static (int DiffLength, int ExtraLength) Match(
        ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> newData, OldIndex index,
        ArrayBufferWriter<byte> control, Span<byte> diff, Span<byte> extra)
    {
        var n = newData.Length;
        var oldLength = oldData.Length;
        int scan = 0, len = 0, pos = 0;
        int lastScan = 0, lastPos = 0, lastOffset = 0;
        int oldCursor = 0, diffLength = 0, extraLength = 0;
        while (scan < n)
        {
            var oldScore = 0;
            scan += len;
            var scsc = scan;
            for (; scan < n; scan++)
            {
                (pos, len) = LongestMatch(oldData, index, newData[scan..]);
                for (; scsc < scan + len; scsc++)
                {
                    if (SameAt(oldData, newData, scsc, lastOffset))
                    {
                        oldScore++;
                    }
                }

                if ((len == oldScore && len != 0) || len > oldScore + 8)
                {
                    break;
                }

                if (SameAt(oldData, newData, scan, lastOffset))
                {
                    oldScore--;
                }

                if (len > LongMatchSkip)
                {
                    for (var stop = scan + len - LongMatchSkip; scan + 1 < stop;)
                    {
                        scan++;
                        if (SameAt(oldData, newData, scan, lastOffset))
                        {
                            oldScore--;
                        }
                    }
                }
            }

            if (len == oldScore && scan != n)
            {
                continue;
            }

            // Forward extension of the previous match.
            long score = 0, bestScore = 0;
            var lenF = 0;
            for (var i = 0; lastScan + i < scan && lastPos + i < oldLength;)
            {
                if (oldData[lastPos + i] == newData[lastScan + i])
                {
                    score++;
                }

                i++;
                if ((score * 2) - i > (bestScore * 2) - lenF)
                {
                    bestScore = score;
                    lenF = i;
                }
            }

            // Backward extension of the new one.
            var lenB = 0;
            if (scan < n)
            {
                score = 0;
                bestScore = 0;
                for (var i = 1; scan >= lastScan + i && pos >= i; i++)
                {
                    if (oldData[pos - i] == newData[scan - i])
                    {
                        score++;
                    }

                    if ((score * 2) - i > (bestScore * 2) - lenB)
                    {
                        bestScore = score;
                        lenB = i;
                    }
                }
            }

            // Where the extensions overlap, cut at the point that keeps the most agreeing bytes.
            if (lastScan + lenF > scan - lenB)
            {
                var overlap = lastScan + lenF - (scan - lenB);
                score = 0;
                bestScore = 0;
                var lenS = 0;
                for (var i = 0; i < overlap; i++)
                {
                    if (newData[lastScan + lenF - overlap + i] == oldData[lastPos + lenF - overlap + i])
                    {
                        score++;
                    }

                    if (newData[scan - lenB + i] == oldData[pos - lenB + i])
                    {
                        score--;
                    }

                    if (score > bestScore)
                    {
                        bestScore = score;
                        lenS = i + 1;
                    }
                }

                lenF += lenS - overlap;
                lenB -= lenS;
            }

            var extraCount = scan - lenB - (lastScan + lenF);
            if (lenF + extraCount > 0)
            {
                Subtract(newData.Slice(lastScan, lenF), oldData.Slice(lastPos, lenF), diff.Slice(diffLength, lenF));
                newData.Slice(lastScan + lenF, extraCount).CopyTo(extra[extraLength..]);
                diffLength += lenF;
                extraLength += extraCount;
                if (lenF > 0)
                {
                    WriteTriple(control, (long)lastPos - oldCursor, lenF, extraCount);
                    oldCursor = lastPos + lenF;
                }
                else
                {
                    WriteTriple(control, 0, 0, extraCount);
                }
            }

            lastScan = scan - lenB;
            lastPos = pos - lenB;
            lastOffset = pos - scan;
        }

        return (diffLength, extraLength);
    }

    private static bool SameAt(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> newData, int at, int offset)
    {
        var o = (long)at + offset;
        return (ulong)o < (ulong)oldData.Length && oldData[(int)o] == newData[at];
    }

    // Suffixes of two bytes or more, by their first two bytes: buckets[key] .. buckets[key + 1] is the range of
    // the suffix array whose suffixes start with key (big-endian). The one-byte suffix (the last byte) sorts
    // before every longer suffix that starts with the same byte.
    private static void BuildBuckets(ReadOnlySpan<byte> oldData, Span<int> buckets)
    {
        buckets.Clear();
        for (var i = 0; i + 1 < oldData.Length; i++)
        {
            buckets[(oldData[i] << 8) | oldData[i + 1]]++;
        }

        var lastFirst = oldData.Length > 0 ? oldData[^1] : -1;
        var sum = 0;
        for (var key = 0; key < BucketCount; key++)
        {
            if ((key & 0xFF) == 0 && key >> 8 == lastFirst)
            {
                sum++;
            }

            var count = buckets[key];
            buckets[key] = sum;
            sum += count;
        }

        buckets[BucketCount] = sum;
    }

    // Which three-byte strings occur in the old bytes, one bit each: most positions of a rewritten region start
    // no longer match than two bytes, and this answers them without a binary search.
    private static void BuildTrigrams(ReadOnlySpan<byte> oldData, Span<ulong> bits)
    {
        bits.Clear();
        for (var i = 0; i + 2 < oldData.Length; i++)
        {
            var key = (oldData[i] << 16) | (oldData[i + 1] << 8) | oldData[i + 2];
            bits[key >> 6] |= 1UL << (key & 63);
        }
    }

    private static (int Pos, int Len) LongestMatch(ReadOnlySpan<byte> oldData, OldIndex index, ReadOnlySpan<byte> text)
    {
        var sa = index.Sa;
        var buckets = index.Buckets;
        int lo = 0, hi = sa.Length;
        if (text.Length >= 2)
        {
            var key = (text[0] << 8) | text[1];
            if (buckets[key] < buckets[key + 1])
            {
                lo = buckets[key];
                hi = buckets[key + 1];
                var trigram = (key << 8) | (text.Length >= 3 ? text[2] : 0);
                if (text.Length >= 3 && (index.Trigrams[trigram >> 6] & (1UL << (trigram & 63))) == 0)
                {
                    return (sa[lo], 2);
                }
            }
            else
            {
                // At most one byte matches: the first suffix of two bytes or more that starts with it, else the
                // one-byte suffix.
                var start = buckets[text[0] << 8];
                if (start < sa.Length && oldData[sa[start]] == text[0])
                {
                    return (sa[start], 1);
                }

                return oldData.Length > 0 && oldData[^1] == text[0] ? (oldData.Length - 1, 1) : (0, 0);
            }
        }

        var first = lo;
        var end = hi;
        while (lo < hi)
        {
            var mid = lo + ((hi - lo) >> 1);
            if (oldData[sa[mid]..].SequenceCompareTo(text) < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid;
            }
        }

        // The longest common prefix is with a neighbour of the insertion point.
        int bestPos = 0, bestLen = 0;
        if (lo > first)
        {
            bestPos = sa[lo - 1];
            bestLen = oldData[bestPos..].CommonPrefixLength(text);
        }

        if (lo < end)
        {
            var p = sa[lo];
            var l = oldData[p..].CommonPrefixLength(text);
            if (l > bestLen)
            {
                bestPos = p;
                bestLen = l;
            }
        }

        return (bestPos, bestLen);
    }

    private static void Subtract(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, Span<byte> result)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i + Vector<byte>.Count <= a.Length; i += Vector<byte>.Count)
            {
                (new Vector<byte>(a[i..]) - new Vector<byte>(b[i..])).CopyTo(result[i..]);
            }
        }

        for (; i < a.Length; i++)
        {
            result[i] = (byte)(a[i] - b[i]);
        }
    }

    // result may start at or before b (the diff stream in the output's tail): each vector is loaded before the
    // store, and stores never reach bytes not yet loaded.
    private static void Add(ReadOnlySpan<byte> a, ReadOnlySpan<byte> b, Span<byte> result)
    {
        var i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            for (; i + Vector<byte>.Count <= a.Length; i += Vector<byte>.Count)
            {
                (new Vector<byte>(a[i..]) + new Vector<byte>(b[i..])).CopyTo(result[i..]);
            }
        }

        for (; i < a.Length; i++)
        {
            result[i] = (byte)(a[i] + b[i]);
        }
    }

    private static void WriteTriple(ArrayBufferWriter<byte> control, long seek, int add, int extra)
    {
        var span = control.GetSpan(30);
        var k = Varint.Write(span, (ulong)((seek << 1) ^ (seek >> 63)));
        k += Varint.Write(span[k..], (ulong)add);
        k += Varint.Write(span[k..], (ulong)extra);
        control.Advance(k);
    }

    private static byte[] Assemble(int newLength, ReadOnlySpan<byte> control, ReadOnlySpan<byte> diff, ReadOnlySpan<byte> extra, int level)
    {
        var bound = Zstd.CompressBound(control.Length) + Zstd.CompressBound(diff.Length) + Zstd.CompressBound(extra.Length);
        var bufferArray = ArrayPool<byte>.Shared.Rent(HeaderSize + bound);
        try
        {
            var buffer = bufferArray.AsSpan(0, HeaderSize + bound);
            var at = HeaderSize;
            byte flags = 0;
            var ctrlStored = Store(control, buffer, ref at, level, ControlZstd, ref flags);
            var diffStored = Store(diff, buffer, ref at, level, DiffZstd, ref flags);
            var extraStored = Store(extra, buffer, ref at, level, ExtraZstd, ref flags);

            Magic.CopyTo(buffer);
            buffer[4] = FormatVersion;
            buffer[5] = flags;
            BinaryPrimitives.WriteUInt16LittleEndian(buffer[6..], 0);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[8..], newLength);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[12..], control.Length);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[16..], ctrlStored);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[20..], diff.Length);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[24..], diffStored);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[28..], extra.Length);
            BinaryPrimitives.WriteInt32LittleEndian(buffer[32..], extraStored);
            return buffer[..at].ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bufferArray);
        }
    }

    private static int Store(ReadOnlySpan<byte> stream, Span<byte> buffer, ref int at, int level, byte flag, ref byte flags)
    {
        if (stream.Length > 0)
        {
            var packed = Zstd.Compress(stream, buffer[at..], level);
            if (packed < stream.Length)
            {
                flags |= flag;
                at += packed;
                return packed;
            }
        }

        stream.CopyTo(buffer[at..]);
        at += stream.Length;
        return stream.Length;
    }

    private static string CheckHeader(ReadOnlySpan<byte> patch, int newLength, out Header header)
    {
        header = default;
        if (patch.Length < HeaderSize)
        {
            return $"{patch.Length} bytes is shorter than the {HeaderSize}-byte header";
        }

        if (!patch[..4].SequenceEqual(Magic))
        {
            return $"magic is {Convert.ToHexString(patch[..4])}, expected {Convert.ToHexString(Magic)}";
        }

        if (patch[4] != FormatVersion)
        {
            return $"format version {patch[4]}, this build reads {FormatVersion}";
        }

        var flags = patch[5];
        if ((flags & ~(ControlZstd | DiffZstd | ExtraZstd)) != 0 || BinaryPrimitives.ReadUInt16LittleEndian(patch[6..]) != 0)
        {
            return $"unknown flags 0x{flags:X2} or reserved bits 0x{BinaryPrimitives.ReadUInt16LittleEndian(patch[6..]):X4}";
        }

        Span<long> fields = stackalloc long[7];
        for (var i = 0; i < fields.Length; i++)
        {
            fields[i] = BinaryPrimitives.ReadUInt32LittleEndian(patch[(8 + (4 * i))..]);
        }

        if (fields[0] != newLength)
        {
            return $"new length is {fields[0]}, expected {newLength}";
        }

        for (var s = 0; s < 3; s++)
        {
            long raw = fields[1 + (2 * s)], stored = fields[2 + (2 * s)];
            var zstd = (flags & (1 << s)) != 0;
            if (zstd ? raw == 0 || stored == 0 : raw != stored)
            {
                return $"{(s == 0 ? "control" : s == 1 ? "diff" : "extra")} stream: raw length {raw}, stored length {stored} ({(zstd ? "zstd" : "raw")})";
            }
        }

        if (fields[3] + fields[5] != newLength)
        {
            return $"diff ({fields[3]}) and extra ({fields[5]}) lengths do not add up to the new length {newLength}";
        }

        if (fields[1] > MaxControlLength(newLength))
        {
            return $"control stream of {fields[1]} bytes exceeds the limit of {MaxControlLength(newLength)} for {newLength} bytes";
        }

        var total = HeaderSize + fields[2] + fields[4] + fields[6];
        if (total != patch.Length)
        {
            return $"header and streams take {total} bytes, the payload has {patch.Length}";
        }

        header = new Header(flags, (int)fields[1], (int)fields[2], (int)fields[3], (int)fields[4], (int)fields[5], (int)fields[6]);
        return "";
    }

    private static bool Decode(string name, ReadOnlySpan<byte> stored, bool zstd, Span<byte> target, out string error)
    {
        if (!zstd)
        {
            stored.CopyTo(target);
            error = "";
            return true;
        }

        if (Zstd.TryDecompress(stored, target, out var reason))
        {
            error = "";
            return true;
        }

        error = $"{name} stream does not decompress: {reason}";
        return false;
    }

    // The output position never passes the read position of the stream kept in the output's tail: it equals
    // (diff consumed) + (extra consumed) and the tail stream's next byte sits at N - (its length) + (its consumed),
    // which is at least that because the other stream's consumed count is at most its length.
    private static string ApplyTriples(ReadOnlySpan<byte> oldData, ReadOnlySpan<byte> control, bool diffInTail, ReadOnlySpan<byte> smallStream, Span<byte> destination, Header header)
    {
        var n = destination.Length;
        var tailStart = n - (diffInTail ? header.DiffRaw : header.ExtraRaw);
        long oldPos = 0;
        int output = 0, d = 0, e = 0, at = 0;
        for (var triple = 0; at < control.Length; triple++)
        {
            var start = at;
            if (!Varint.TryRead(control, ref at, out var zigzag)
                || !Varint.TryRead(control, ref at, out var addU)
                || !Varint.TryRead(control, ref at, out var extraU))
            {
                return $"control triple {triple} at control offset {start} is truncated or overlong";
            }

            var seek = (long)(zigzag >> 1) ^ -(long)(zigzag & 1);
            if (seek < -(long)oldData.Length || seek > oldData.Length)
            {
                return $"control triple {triple}: seek {seek} leaves the {oldData.Length} old bytes";
            }

            oldPos += seek;
            if (oldPos < 0 || oldPos > oldData.Length || addU > (ulong)(oldData.Length - oldPos))
            {
                return $"control triple {triple}: add of {addU} bytes at old offset {oldPos} leaves the {oldData.Length} old bytes";
            }

            if (addU > (ulong)(header.DiffRaw - d) || extraU > (ulong)(header.ExtraRaw - e) || addU + extraU == 0)
            {
                return $"control triple {triple}: add {addU}, extra {extraU} with {header.DiffRaw - d} diff and {header.ExtraRaw - e} extra bytes left";
            }

            int add = (int)addU, extra = (int)extraU;
            ReadOnlySpan<byte> diff = diffInTail ? destination.Slice(tailStart + d, add) : smallStream.Slice(d, add);
            Add(oldData.Slice((int)oldPos, add), diff, destination.Slice(output, add));
            output += add;
            var extraBytes = diffInTail ? smallStream.Slice(e, extra) : destination.Slice(tailStart + e, extra);
            extraBytes.CopyTo(destination.Slice(output, extra));
            output += extra;
            oldPos += add;
            d += add;
            e += extra;
        }

        return output == n ? "" : $"control stream ends after {output} of {n} bytes";
    }

    private readonly ref struct OldIndex(ReadOnlySpan<int> sa, ReadOnlySpan<int> buckets, ReadOnlySpan<ulong> trigrams)
    {
        public ReadOnlySpan<int> Sa { get; } = sa;

        public ReadOnlySpan<int> Buckets { get; } = buckets;

        public ReadOnlySpan<ulong> Trigrams { get; } = trigrams;
    }

    private readonly record struct Header(byte Flags, int ControlRaw, int ControlStored, int DiffRaw, int DiffStored, int ExtraRaw, int ExtraStored);
}
