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
}
