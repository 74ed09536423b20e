using DiffKeeper.Native.Interop;

namespace DiffKeeper.Storage.Codecs;

/// <summary>
/// SHA-256, the hash of blob ids, content ids and base digests: by native/sha256.c (<see cref="DkSha256"/>, the CPU's
/// SHA instructions, linked in) where the CPU has them, else by libcrypto's low-level interface (<see cref="LibCrypto"/>
/// says why not System.Security.Cryptography). The digests are the same bytes; the linked code spares a process the
/// load of libcrypto (~130 page faults).
/// </summary>
public static unsafe class Sha256
{
    public const int HashSize = 32;

    /// <summary>Whether the linked code is used (the CPU has the SHA extensions); fixed for the process.</summary>
    internal static readonly bool Linked = DkSha256.Available() == 1;

    /// <summary>Hashes <paramref name="data"/> into <paramref name="digest"/> (at least 32 bytes).</summary>
    public static void HashData(ReadOnlySpan<byte> data, Span<byte> digest)
    {
        var hash = new Hasher();
        hash.Append(data);
        hash.Finish(digest);
    }

    public static byte[] HashData(ReadOnlySpan<byte> data)
    {
        var digest = new byte[HashSize];
        HashData(data, digest);
        return digest;
    }

    /// <summary>An incremental hash: <see cref="Append"/> any number of times, then <see cref="Finish"/> once.</summary>
    public struct Hasher
    {
        private LibCrypto.Sha256Context _context;

        public Hasher()
        {
            fixed (LibCrypto.Sha256Context* c = &_context)
            {
                if (Linked)
                {
                    DkSha256.Init(c);
                }
                else
                {
                    Check(LibCrypto.Sha256Init(c));
                }
            }
        }

        public void Append(ReadOnlySpan<byte> data)
        {
            fixed (LibCrypto.Sha256Context* c = &_context)
            fixed (byte* p = data)
            {
                if (Linked)
                {
                    DkSha256.Update(c, p, (nuint)data.Length);
                }
                else
                {
                    Check(LibCrypto.Sha256Update(c, p, (nuint)data.Length));
                }
            }
        }

        public void Finish(Span<byte> digest)
        {
            ArgumentOutOfRangeException.ThrowIfLessThan(digest.Length, HashSize);
            fixed (LibCrypto.Sha256Context* c = &_context)
            fixed (byte* d = digest)
            {
                if (Linked)
                {
                    DkSha256.Final(c, d);
                }
                else
                {
                    Check(LibCrypto.Sha256Final(d, c));
                }
            }
        }

        // These calls fail only on a null pointer, which cannot happen here; checked anyway, since a hash left
        // unwritten would read as a mismatch far from its cause.
        private static void Check(int ok)
        {
            if (ok != 1)
            {
                throw new InvalidOperationException("libcrypto's SHA-256 failed");
            }
        }
    }
}
