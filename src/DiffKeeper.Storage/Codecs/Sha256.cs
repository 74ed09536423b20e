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

    /// <summary>The most hashes <see cref="Hasher.AppendEach"/> advances at once: the 32-bit lanes of an AVX-512 register.</summary>
    public const int Lanes = 16;

    [ThreadStatic]
    private static long t_hashed;

    /// <summary>
    /// Bytes the calling thread has appended to hashes so far: what hashing cost it, in the unit that matters (the
    /// recorder's thread hashes every byte a recorded program writes; tests check that it hashes each byte once).
    /// </summary>
    public static long HashedOnThisThread => t_hashed;

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
            t_hashed += data.Length;
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

        /// <summary>
        /// Appends to each of <paramref name="hashers"/> (at most <see cref="Lanes"/>) its own bytes: hasher i gets
        /// <paramref name="lengths"/>[i] bytes of <paramref name="buffer"/> from i × <paramref name="stride"/>. The same
        /// result as one <see cref="Append"/> each; where the CPU has AVX-512 the whole blocks of eight to sixteen of them
        /// are hashed together, one hash in each lane of its vector registers (native/sha256.c), 2.2× the speed of the
        /// SHA instructions one hash at a time (docs/benchmarks.md, "mat15").
        /// </summary>
        public static void AppendEach(Span<Hasher> hashers, ReadOnlySpan<byte> buffer, int stride, ReadOnlySpan<int> lengths)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(hashers.Length, Lanes);
            ArgumentOutOfRangeException.ThrowIfLessThan(lengths.Length, hashers.Length);
            ArgumentOutOfRangeException.ThrowIfNegative(stride);
            for (var i = 0; i < hashers.Length; i++)
            {
                if (lengths[i] < 0 || (long)i * stride + lengths[i] > buffer.Length)
                {
                    throw new ArgumentOutOfRangeException(nameof(lengths), $"lane {i}'s {lengths[i]} bytes lie outside the buffer");
                }
            }

            if (!Linked) // each Append counts its bytes
            {
                for (var i = 0; i < hashers.Length; i++)
                {
                    hashers[i].Append(buffer.Slice(i * stride, lengths[i]));
                }

                return;
            }

            var contexts = stackalloc LibCrypto.Sha256Context*[Lanes];
            var data = stackalloc byte*[Lanes];
            var sizes = stackalloc nuint[Lanes];
            fixed (Hasher* h = hashers)
            fixed (byte* b = buffer)
            {
                for (var i = 0; i < hashers.Length; i++)
                {
                    contexts[i] = &h[i]._context;
                    data[i] = b + ((long)i * stride);
                    sizes[i] = (nuint)lengths[i];
                }

                DkSha256.UpdateMany(contexts, data, sizes, (nuint)hashers.Length);
            }

            for (var i = 0; i < hashers.Length; i++)
            {
                t_hashed += lengths[i];
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
