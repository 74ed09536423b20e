using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// SHA-256 from the system libcrypto (libcrypto.so.3), through its low-level SHA256_Init/Update/Final: the same
/// assembly (SHA-NI where the CPU has it) as the EVP interface .NET's SHA256 uses, without what .NET loads first
/// (libssl, OPENSSL_init_ssl reading openssl.cnf, the shim resolving hundreds of symbols): measured, that start-up
/// was the largest single cost of a small export after the runtime's own. The one-shot SHA256() is not used: in
/// OpenSSL 3 it fetches an EVP implementation, which initializes the providers all the same.
/// </summary>
public static unsafe partial class LibCrypto
{
    private const string Lib = "libcrypto.so.3";

    /// <summary>OpenSSL's SHA256_CTX: eight state words, two length words, a 64-byte block, two counters (112 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Sha256Context
    {
        private fixed ulong _words[14]; // 112 bytes, 8-byte aligned: OpenSSL's SHA256_CTX and native/sha256.c's context fit
    }

    [LibraryImport(Lib, EntryPoint = "SHA256_Init")]
    public static partial int Sha256Init(Sha256Context* context);

    [LibraryImport(Lib, EntryPoint = "SHA256_Update")]
    public static partial int Sha256Update(Sha256Context* context, byte* data, nuint length);

    [LibraryImport(Lib, EntryPoint = "SHA256_Final")]
    public static partial int Sha256Final(byte* digest, Sha256Context* context);
}
