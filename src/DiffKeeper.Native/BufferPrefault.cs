using System.Runtime.CompilerServices;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Native;

/// <summary>
/// Maps the pages of a large managed buffer in one madvise(MADV_POPULATE_WRITE) call before it is first written,
/// instead of one page fault per page as the writes reach them. A short process touches mostly fresh memory: a W1
/// `record` took ~2,270 page faults, ~1,000 of them in buffers of its own (the file read, the pack's buffer, the
/// compacted chunks and their bases). On this project's VM a fault costs 11–35 µs and a page populated in one call
/// ~5 µs (docs/benchmarks.md, "Issue 12, W1: the store time per version"); see also <see cref="HeapPrefault"/>.
/// The bytes are not changed. Before Linux 5.14 the call fails and the pages fault in as before.
/// </summary>
public static unsafe class BufferPrefault
{
    /// <summary>Below this a buffer is a few pages: the call would cost what it saves.</summary>
    public const int MinLength = 64 << 10;

    // Pooled arrays come back: each is populated once, for the longest prefix asked so far. Weak keys: an array the
    // pool drops is forgotten with it (its memory may be a fresh one's next time, which is then populated anew).
    private static readonly ConditionalWeakTable<byte[], StrongBox<int>> s_populated = [];

    /// <summary>
    /// Populates <paramref name="array"/>[0..<paramref name="length"/>) unless an earlier call populated at least that
    /// much of this array. For buffers a caller is about to fill (a read, a copy, an encoder's output).
    /// </summary>
    public static void Once(byte[] array, int length)
    {
        length = Math.Min(length, array.Length);
        if (length < MinLength)
        {
            return;
        }

        var done = s_populated.GetOrCreateValue(array);
        if (Volatile.Read(ref done.Value) >= length)
        {
            return;
        }

        Populate(array.AsSpan(0, length));
        Volatile.Write(ref done.Value, length); // a race populates twice, which changes nothing
    }

    /// <summary>
    /// Populates every page that holds a byte of <paramref name="memory"/> (writable memory: the managed heap, a
    /// malloc'd block); false when the kernel refused (before 5.14).
    /// </summary>
    public static bool Populate(Span<byte> memory)
    {
        if (memory.IsEmpty)
        {
            return true;
        }

        fixed (byte* p = memory)
        {
            var start = (nuint)p & ~(nuint)4095;
            var end = ((nuint)p + (nuint)memory.Length + 4095) & ~(nuint)4095;
            return Libc.Madvise((void*)start, end - start, Libc.MADV_POPULATE_WRITE) == 0;
        }
    }
}
