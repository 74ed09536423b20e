using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>The system libzstd (libzstd.so.1): one-shot compression, and compression against a prefix (the --patch-from technique).</summary>
public static unsafe partial class LibZstd
{
    private const string Lib = "libzstd.so.1";

    // Not called by diffkeeper (Zstd.CompressBound computes zstd.h's macro): CodecTests checks that against this.
    [LibraryImport(Lib, EntryPoint = "ZSTD_compressBound")]
    public static partial nuint CompressBound(nuint srcSize);

    [LibraryImport(Lib, EntryPoint = "ZSTD_compress")]
    public static partial nuint Compress(byte* dst, nuint dstCapacity, byte* src, nuint srcSize, int level);

    [LibraryImport(Lib, EntryPoint = "ZSTD_decompress")]
    public static partial nuint Decompress(byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

    [LibraryImport(Lib, EntryPoint = "ZSTD_getFrameContentSize")]
    public static partial ulong GetFrameContentSize(byte* src, nuint srcSize);

    [LibraryImport(Lib, EntryPoint = "ZSTD_isError")]
    public static partial uint IsError(nuint code);

    [LibraryImport(Lib, EntryPoint = "ZSTD_getErrorName")]
    private static partial nint GetErrorNamePtr(nuint code);

    [LibraryImport(Lib, EntryPoint = "ZSTD_createCCtx")]
    public static partial nint CreateCCtx();

    [LibraryImport(Lib, EntryPoint = "ZSTD_freeCCtx")]
    public static partial nuint FreeCCtx(nint cctx);

    [LibraryImport(Lib, EntryPoint = "ZSTD_compressCCtx")]
    public static partial nuint CompressCCtx(nint cctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize, int level);

    [LibraryImport(Lib, EntryPoint = "ZSTD_createDCtx")]
    public static partial nint CreateDCtx();

    [LibraryImport(Lib, EntryPoint = "ZSTD_freeDCtx")]
    public static partial nuint FreeDCtx(nint dctx);

    [LibraryImport(Lib, EntryPoint = "ZSTD_decompressDCtx")]
    public static partial nuint DecompressDCtx(nint dctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

    public const int CompressionLevelParameter = 100;
    public const int WindowLogParameter = 101;
    public const int ResetSessionOnly = 1;

    [LibraryImport(Lib, EntryPoint = "ZSTD_CCtx_setParameter")]
    public static partial nuint CCtxSetParameter(nint cctx, int parameter, int value);

    [LibraryImport(Lib, EntryPoint = "ZSTD_CCtx_reset")]
    public static partial nuint CCtxReset(nint cctx, int reset);

    [LibraryImport(Lib, EntryPoint = "ZSTD_CCtx_refPrefix")]
    public static partial nuint CCtxRefPrefix(nint cctx, byte* prefix, nuint prefixSize);

    [LibraryImport(Lib, EntryPoint = "ZSTD_compress2")]
    public static partial nuint Compress2(nint cctx, byte* dst, nuint dstCapacity, byte* src, nuint srcSize);

    [LibraryImport(Lib, EntryPoint = "ZSTD_DCtx_reset")]
    public static partial nuint DCtxReset(nint dctx, int reset);

    [LibraryImport(Lib, EntryPoint = "ZSTD_DCtx_refPrefix")]
    public static partial nuint DCtxRefPrefix(nint dctx, byte* prefix, nuint prefixSize);

    /// <summary>ZSTD_inBuffer and ZSTD_outBuffer (one layout): a buffer, its size, and how far zstd has read or written it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct StreamBuffer
    {
        public byte* Data;
        public nuint Size;
        public nuint Pos;
    }

    [LibraryImport(Lib, EntryPoint = "ZSTD_decompressStream")]
    public static partial nuint DecompressStream(nint dctx, StreamBuffer* output, StreamBuffer* input);

    public static string ErrorName(nuint code) => Marshal.PtrToStringUTF8(GetErrorNamePtr(code)) ?? "unknown zstd error";
}
