using DiffKeeper.Native.Interop;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// zstd through the system libzstd. Compression contexts are shared by all threads, one for each compression running at
/// once, kept for the process's life; a decompression context per thread (the library never hands them to callers).
/// </summary>
public static unsafe class Zstd
{
    public const int DefaultLevel = 1;

    [ThreadStatic] private static nint t_dctx;

    // A context's workspace (hash tables, literals, sequences: ~400 KB at level 1) is fresh memory the first time it
    // is used: a context per thread cost every thread that compressed its own page faults, ~100 for the pass after a W1
    // session, which ran on a thread whose context was new, beside the ingest's.
    private static readonly Lock s_contextsLock = new();
    private static readonly Stack<nint> s_contexts = new();
    private static int s_contextsCreated;

    /// <summary>Compression contexts this process created (tests: one thread after another share one).</summary>
    internal static int ContextsCreated => Volatile.Read(ref s_contextsCreated);

    private static nint RentContext()
    {
        lock (s_contextsLock)
        {
            if (s_contexts.TryPop(out var cctx))
            {
                return cctx;
            }
        }

        var created = LibZstd.CreateCCtx();
        Interlocked.Increment(ref s_contextsCreated);
        return created != 0 ? created : throw new OutOfMemoryException("zstd could not create a compression context");
    }

    /// <summary>Gives a context back after a compression that completed; one that failed half-way may hold a frame's
    /// state or a prefix it did not consume, and is freed instead.</summary>
    private static void ReturnContext(nint cctx, bool completed)
    {
        if (!completed)
        {
            _ = LibZstd.FreeCCtx(cctx);
            return;
        }

        lock (s_contextsLock)
        {
            s_contexts.Push(cctx);
        }
    }

    /// <summary>
    /// zstd's ZSTD_COMPRESSBOUND (zstd.h, a stable macro that ZSTD_compressBound returns for any length below its
    /// input limit), computed here: the catalog's domain rules need it, and asking libzstd loaded the library (~1 ms of
    /// a `materialize` that decodes nothing) just for two constants.
    /// </summary>
    public static int CompressBound(int length)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        const long Block = 128 << 10;
        var bound = length + (length >> 8) + (length < Block ? (Block - length) >> 11 : 0);
        return checked((int)bound);
    }

    /// <summary>Compresses into <paramref name="destination"/>; returns the compressed length.</summary>
    public static int Compress(ReadOnlySpan<byte> source, Span<byte> destination, int level = DefaultLevel)
    {
        var cctx = RentContext();
        var completed = false;
        try
        {
            fixed (byte* src = source)
            fixed (byte* dst = destination)
            {
                // The simple API: the level's parameters, whatever a prefix compression left set on the context.
                var r = LibZstd.CompressCCtx(cctx, dst, (nuint)destination.Length, src, (nuint)source.Length, level);
                if (LibZstd.IsError(r) != 0)
                {
                    throw new InvalidOperationException($"zstd compression failed: {LibZstd.ErrorName(r)}");
                }

                completed = true;
                return (int)r;
            }
        }
        finally
        {
            ReturnContext(cctx, completed);
        }
    }

    /// <summary>The content size a frame's header declares, or null when it declares none or is not a zstd frame.</summary>
    public static long? FrameContentSize(ReadOnlySpan<byte> frame)
    {
        fixed (byte* src = frame)
        {
            var size = LibZstd.GetFrameContentSize(src, (nuint)frame.Length);
            return size >= ulong.MaxValue - 1 || size > long.MaxValue ? null : (long)size; // ZSTD_CONTENTSIZE_UNKNOWN, _ERROR
        }
    }

    /// <summary>
    /// Decompresses a frame whose content size is exactly <paramref name="destination"/>.Length; returns false when
    /// the frame is damaged or has another size (the caller names the blob).
    /// </summary>
    public static bool TryDecompress(ReadOnlySpan<byte> source, Span<byte> destination, out string error)
    {
        if (t_dctx == 0)
        {
            t_dctx = LibZstd.CreateDCtx();
        }

        fixed (byte* src = source)
        fixed (byte* dst = destination)
        {
            var r = LibZstd.DecompressDCtx(t_dctx, dst, (nuint)destination.Length, src, (nuint)source.Length);
            if (LibZstd.IsError(r) != 0)
            {
                error = LibZstd.ErrorName(r);
                return false;
            }

            if ((int)r != destination.Length)
            {
                error = $"decompressed to {r} bytes, expected {destination.Length}";
                return false;
            }

            error = "";
            return true;
        }
    }

    /// <summary>
    /// Decompresses only the first <paramref name="destination"/>.Length bytes of a frame, stopping there (zstd's
    /// streaming decoder: it decodes at most one block, 128 KiB, past what it hands out). False when the frame is
    /// damaged or holds fewer bytes.
    /// </summary>
    public static bool TryDecompressPrefix(ReadOnlySpan<byte> source, Span<byte> destination, out string error)
    {
        if (t_dctx == 0)
        {
            t_dctx = LibZstd.CreateDCtx();
        }

        fixed (byte* src = source)
        fixed (byte* dst = destination)
        {
            LibZstd.DCtxReset(t_dctx, LibZstd.ResetSessionOnly);
            var input = new LibZstd.StreamBuffer { Data = src, Size = (nuint)source.Length };
            var output = new LibZstd.StreamBuffer { Data = dst, Size = (nuint)destination.Length };
            try
            {
                while (output.Pos < output.Size)
                {
                    var before = (input.Pos, output.Pos);
                    var r = LibZstd.DecompressStream(t_dctx, &output, &input);
                    if (LibZstd.IsError(r) != 0)
                    {
                        error = LibZstd.ErrorName(r);
                        return false;
                    }

                    if (r == 0 || before == (input.Pos, output.Pos))
                    {
                        break; // the frame ended, or its bytes did (truncated): no progress is possible
                    }
                }
            }
            finally
            {
                LibZstd.DCtxReset(t_dctx, LibZstd.ResetSessionOnly); // the frame was left half read
            }

            error = output.Pos == output.Size ? "" : $"the frame holds {output.Pos} bytes, fewer than the {destination.Length} asked for";
            return output.Pos == output.Size;
        }
    }

    /// <summary>
    /// Compresses <paramref name="source"/> with <paramref name="prefix"/> as a single-use dictionary (zstd's
    /// refPrefix, the technique of <c>zstd --patch-from</c>): bytes shared with the prefix cost almost nothing. The
    /// same prefix must be given to <see cref="TryDecompressWithPrefix"/>. Returns the compressed length.
    /// </summary>
    public static int CompressWithPrefix(ReadOnlySpan<byte> source, ReadOnlySpan<byte> prefix, Span<byte> destination, int level = DefaultLevel)
    {
        var cctx = RentContext();
        var completed = false;
        try
        {
            fixed (byte* src = source)
            fixed (byte* pre = prefix)
            fixed (byte* dst = destination)
            {
                Check(LibZstd.CCtxReset(cctx, LibZstd.ResetSessionOnly));
                Check(LibZstd.CCtxSetParameter(cctx, LibZstd.CompressionLevelParameter, level));
                // The level's own window may be smaller than the prefix: matches into the prefix's far end would
                // then be lost. zstd --patch-from sizes the window the same way.
                var window = Math.Clamp(64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(prefix.Length + source.Length)), 10, 27);
                Check(LibZstd.CCtxSetParameter(cctx, LibZstd.WindowLogParameter, window));
                Check(LibZstd.CCtxRefPrefix(cctx, pre, (nuint)prefix.Length));
                var n = (int)Check(LibZstd.Compress2(cctx, dst, (nuint)destination.Length, src, (nuint)source.Length));
                completed = true;
                return n;
            }
        }
        finally
        {
            ReturnContext(cctx, completed);
        }
    }

    /// <summary>Decompresses a frame made by <see cref="CompressWithPrefix"/> with the same prefix; false when it does not decode to exactly <paramref name="destination"/>.Length bytes.</summary>
    public static bool TryDecompressWithPrefix(ReadOnlySpan<byte> source, ReadOnlySpan<byte> prefix, Span<byte> destination, out string error)
    {
        if (t_dctx == 0)
        {
            t_dctx = LibZstd.CreateDCtx();
        }

        fixed (byte* src = source)
        fixed (byte* pre = prefix)
        fixed (byte* dst = destination)
        {
            LibZstd.DCtxReset(t_dctx, LibZstd.ResetSessionOnly);
            var r = LibZstd.DCtxRefPrefix(t_dctx, pre, (nuint)prefix.Length);
            if (LibZstd.IsError(r) == 0)
            {
                r = LibZstd.DecompressDCtx(t_dctx, dst, (nuint)destination.Length, src, (nuint)source.Length);
            }

            if (LibZstd.IsError(r) != 0)
            {
                error = LibZstd.ErrorName(r);
                return false;
            }

            error = (int)r == destination.Length ? "" : $"decompressed to {r} bytes, expected {destination.Length}";
            return error.Length == 0;
        }
    }

    private static nuint Check(nuint code) => LibZstd.IsError(code) == 0
        ? code
        : throw new InvalidOperationException($"zstd failed: {LibZstd.ErrorName(code)}");
}
