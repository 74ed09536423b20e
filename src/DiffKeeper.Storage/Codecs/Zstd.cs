using DiffKeeper.Native.Interop;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// zstd through the system libzstd. One compression and one decompression context per thread, created on first
/// use and kept for the thread's life (the library never hands them to callers).
/// </summary>
public static unsafe class Zstd
{
    public const int DefaultLevel = 1;

    [ThreadStatic] private static nint t_cctx;
    [ThreadStatic] private static nint t_dctx;

    public static int CompressBound(int length) => checked((int)LibZstd.CompressBound((nuint)length));

    /// <summary>Compresses into <paramref name="destination"/>; returns the compressed length.</summary>
    public static int Compress(ReadOnlySpan<byte> source, Span<byte> destination, int level = DefaultLevel)
    {
        if (t_cctx == 0)
        {
            t_cctx = LibZstd.CreateCCtx();
        }

        fixed (byte* src = source)
        fixed (byte* dst = destination)
        {
            var r = LibZstd.CompressCCtx(t_cctx, dst, (nuint)destination.Length, src, (nuint)source.Length, level);
            if (LibZstd.IsError(r) != 0)
            {
                throw new InvalidOperationException($"zstd compression failed: {LibZstd.ErrorName(r)}");
            }

            return (int)r;
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
}
