using System.Numerics;
using System.Runtime.InteropServices;

namespace DiffKeeper.Core;

/// <summary>
/// Equality of (root, root-relative path) keys, for the recorder's per-path tables: every captured event looks its
/// path up in several of them (a write storm: about ten lookups per write), and the default comparer of a tuple holding
/// a string went through shared generic code, <c>HashCode.Combine</c> and the randomized string hash on each. This
/// hashes the path's UTF-16 bytes eight at a time with a per-process random seed (a program cannot choose names that
/// collide), and compares ordinally.
/// </summary>
public sealed class PathKeyComparer : IEqualityComparer<(int Root, string Rel)>, IEqualityComparer<(long Root, string Rel)>
{
    public static readonly PathKeyComparer Instance = new();

    private const ulong Prime1 = 0x9E3779B185EBCA87;
    private const ulong Prime2 = 0xC2B2AE3D27D4EB4F;

    private readonly ulong _seed = (ulong)Random.Shared.NextInt64() | 1;

    public bool Equals((int Root, string Rel) x, (int Root, string Rel) y) => x.Root == y.Root && string.Equals(x.Rel, y.Rel);

    public int GetHashCode((int Root, string Rel) key) => Hash(key.Rel, (ulong)key.Root);

    public bool Equals((long Root, string Rel) x, (long Root, string Rel) y) => x.Root == y.Root && string.Equals(x.Rel, y.Rel);

    public int GetHashCode((long Root, string Rel) key) => Hash(key.Rel, (ulong)key.Root);

    private int Hash(string s, ulong root)
    {
        var bytes = MemoryMarshal.AsBytes(s.AsSpan());
        var h = (_seed + root * Prime1) ^ (ulong)bytes.Length;
        while (bytes.Length >= 8)
        {
            h = BitOperations.RotateLeft((h ^ MemoryMarshal.Read<ulong>(bytes)) * Prime1, 31) * Prime2;
            bytes = bytes[8..];
        }

        if (bytes.Length > 0)
        {
            ulong tail = 0;
            for (var i = 0; i < bytes.Length; i++)
            {
                tail |= (ulong)bytes[i] << (8 * i);
            }

            h = BitOperations.RotateLeft((h ^ tail) * Prime1, 31) * Prime2;
        }

        h ^= h >> 33;
        h *= Prime2;
        h ^= h >> 29;
        return (int)h ^ (int)(h >> 32);
    }
}
