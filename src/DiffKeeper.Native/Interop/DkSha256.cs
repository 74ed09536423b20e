using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// native/sha256.c: SHA-256 with the x86 SHA extensions, linked into the executable, so that hashing does not load
/// libcrypto (~130 page faults a process). Usable only where <see cref="Available"/> returned 1; the context is the
/// same 112 bytes as libcrypto's (<see cref="LibCrypto.Sha256Context"/>), laid out by sha256.c.
/// </summary>
public static unsafe partial class DkSha256
{
    private const string Lib = "libdksha256";

    /// <summary>1 when this CPU has the SHA extensions (and SSSE3, SSE4.1), else 0.</summary>
    [LibraryImport(Lib, EntryPoint = "dk_sha256_available")]
    [SuppressGCTransition]
    public static partial int Available();

    [LibraryImport(Lib, EntryPoint = "dk_sha256_init")]
    [SuppressGCTransition]
    public static partial void Init(LibCrypto.Sha256Context* context);

    [LibraryImport(Lib, EntryPoint = "dk_sha256_update")]
    public static partial void Update(LibCrypto.Sha256Context* context, byte* data, nuint length);

    [LibraryImport(Lib, EntryPoint = "dk_sha256_final")]
    [SuppressGCTransition]
    public static partial void Final(LibCrypto.Sha256Context* context, byte* digest);

    /// <summary>1 when <see cref="UpdateMany"/> hashes sixteen messages at once on this CPU (AVX-512), else 0.</summary>
    [LibraryImport(Lib, EntryPoint = "dk_sha256_many_available")]
    [SuppressGCTransition]
    public static partial int ManyAvailable();

    /// <summary>
    /// <see cref="Update"/> of <paramref name="contexts"/>[i] with <paramref name="lengths"/>[i] bytes at
    /// <paramref name="data"/>[i], for each i below <paramref name="count"/>; the same result as one call each, sixteen
    /// lanes at a time where the CPU has AVX-512. Only where <see cref="Available"/> returned 1.
    /// </summary>
    [LibraryImport(Lib, EntryPoint = "dk_sha256_update_many")]
    public static partial void UpdateMany(LibCrypto.Sha256Context** contexts, byte** data, nuint* lengths, nuint count);
}
