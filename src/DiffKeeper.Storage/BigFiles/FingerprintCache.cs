using System.Buffers.Binary;
using System.IO.Hashing;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// The block fingerprints `snapshot` keeps beside its versions (docs/store-format.md, "Block fingerprints"): a cache,
/// not part of the store's format. Contract: whatever the files hold (missing, stale, torn, damaged, written by another
/// seed), <see cref="Apply"/> returns either pieces with fingerprints of exactly the named version's bytes or the
/// pieces unchanged; it never throws for a bad file. Writes are best effort (a temporary file, then a rename; no
/// fsync) and never fail the snapshot. The caller holds the store's writer lock.
/// </summary>
public static class FingerprintCache
{
    public const string DirName = "fingerprints";
    private const string SeedName = "seed";
    private const int Layout = 1;
    private const int HeaderLength = 8 + 4 + 4 + 8 + 8 + 32;
    private const int ChecksumLength = 16;
    private static ReadOnlySpan<byte> Magic => "DKFPRINT"u8;

    /// <summary>The store's fingerprint seed; drawn and written when missing or damaged (which makes every fingerprint file stale).</summary>
    public static long Seed(string storeDir)
    {
        var dir = Path.Combine(storeDir, DirName);
        var path = Path.Combine(dir, SeedName);
        try
        {
            var bytes = File.ReadAllBytes(path);
            if (bytes.Length == 16 && XxHash3.HashToUInt64(bytes.AsSpan(0, 8)) == BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(8)))
            {
                return BinaryPrimitives.ReadInt64LittleEndian(bytes);
            }
        }
        catch (IOException)
        {
            // missing or unreadable: a new seed below
        }
        catch (UnauthorizedAccessException)
        {
        }

        var seed = BlockFingerprint.NewSeed();
        var data = new byte[16];
        BinaryPrimitives.WriteInt64LittleEndian(data, seed);
        BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(8), XxHash3.HashToUInt64(data.AsSpan(0, 8)));
        TryWrite(dir, SeedName, data);
        return seed;
    }

    /// <summary>
    /// <paramref name="pieces"/> (version <paramref name="versionId"/>'s block map, whose content id is
    /// <paramref name="contentId"/>) with the fingerprints its file holds under <paramref name="seed"/>, or
    /// <paramref name="pieces"/> as they are when there is no valid file for exactly that version.
    /// </summary>
    public static List<BlockPiece> Apply(string storeDir, long versionId, byte[] contentId, long seed, List<BlockPiece> pieces)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(FilePath(storeDir, versionId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return pieces;
        }

        var n = pieces.Count;
        if (bytes.Length != HeaderLength + 16L * n + ChecksumLength
            || XxHash128.HashToUInt128(bytes.AsSpan(0, bytes.Length - ChecksumLength)) != ReadUInt128(bytes.AsSpan(bytes.Length - ChecksumLength))
            || !bytes.AsSpan(0, 8).SequenceEqual(Magic)
            || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8)) != Layout
            || BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(12)) != n
            || BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16)) != seed
            || BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(24)) != versionId
            || !bytes.AsSpan(32, 32).SequenceEqual(contentId))
        {
            return pieces;
        }

        var result = new List<BlockPiece>(n);
        for (var i = 0; i < n; i++)
        {
            result.Add(pieces[i] with { Fingerprint = ReadUInt128(bytes.AsSpan(HeaderLength + 16 * i)) });
        }

        return result;
    }

    /// <summary>Writes the fingerprints of version <paramref name="versionId"/> (best effort; a failure only costs the next snapshot time).</summary>
    public static void Write(string storeDir, long versionId, byte[] contentId, long seed, IReadOnlyList<BlockPiece> pieces)
    {
        if (contentId.Length != 32)
        {
            return;
        }

        var bytes = new byte[HeaderLength + 16L * pieces.Count + ChecksumLength];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), Layout);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), pieces.Count);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), seed);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(24), versionId);
        contentId.CopyTo(bytes.AsSpan(32));
        for (var i = 0; i < pieces.Count; i++)
        {
            WriteUInt128(bytes.AsSpan(HeaderLength + 16 * i), pieces[i].Fingerprint);
        }

        WriteUInt128(bytes.AsSpan(bytes.Length - ChecksumLength), XxHash128.HashToUInt128(bytes.AsSpan(0, bytes.Length - ChecksumLength)));
        TryWrite(Path.Combine(storeDir, DirName), Name(versionId), bytes);
    }

    /// <summary>Removes version <paramref name="versionId"/>'s fingerprints, if any (best effort).</summary>
    public static void Remove(string storeDir, long versionId)
    {
        try
        {
            File.Delete(FilePath(storeDir, versionId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // a leftover file is never wrong: only a version with its content id matches it
        }
    }

    public static string FilePath(string storeDir, long versionId) => Path.Combine(storeDir, DirName, Name(versionId));

    private static string Name(long versionId) => versionId.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static void TryWrite(string dir, string name, byte[] bytes)
    {
        var temp = Path.Combine(dir, $".{name}.{Environment.ProcessId}.tmp");
        try
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.WriteAllBytes(temp, bytes);
            File.Move(temp, Path.Combine(dir, name), overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try
            {
                File.Delete(temp);
            }
            catch (Exception again) when (again is IOException or UnauthorizedAccessException)
            {
                // nothing more to do: a leftover temporary file is never read
            }
        }
    }

    private static UInt128 ReadUInt128(ReadOnlySpan<byte> b) =>
        new(BinaryPrimitives.ReadUInt64LittleEndian(b[8..]), BinaryPrimitives.ReadUInt64LittleEndian(b));

    private static void WriteUInt128(Span<byte> b, UInt128 v)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b, (ulong)v);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], (ulong)(v >> 64));
    }
}
