using System.Buffers.Binary;
using System.IO.Hashing;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// The block fingerprints `snapshot` keeps beside its versions (docs/store-format.md, "Block fingerprints"): a cache,
/// not part of the store's format. Contract: whatever the files hold (missing, stale, torn, damaged, written by another
/// seed), <see cref="Previous"/> returns the named version's block map, with fingerprints of exactly its bytes or none;
/// it never throws for a bad file. Writes are best effort (a temporary
/// file, then a rename; no fsync) and never fail the snapshot. The caller holds the store's writer lock.
/// </summary>
public static class FingerprintCache
{
    public const string DirName = "fingerprints";
    private const string SeedName = "seed";
    private const int Layout = 1; // a fingerprint per piece
    private const int WithIds = 2; // a fingerprint and the blob id per piece
    private const int HeaderLength = 8 + 4 + 4 + 8 + 8 + 32;
    private const int WithIdsLength = 16 + 32;

    // A version's ids are written when they add at most 1/1024 of its data bytes (pieces of 32 KiB or more on average:
    // a checkpoint's full 64 KiB blocks), not for a sparse image's 4 KiB pages, where they would add 0.8% to the store.
    private const int IdsFromAveragePiece = 32 << 10;
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
    /// Version <paramref name="versionId"/>'s block map (<paramref name="extentMap"/>, for a file of
    /// <paramref name="size"/> bytes, whose content id is <paramref name="contentId"/>) with each piece's blob id and,
    /// when its fingerprint file under <paramref name="seed"/> is valid for exactly that version, its fingerprint.
    /// A file that holds blob ids too (layout 2) spares the catalog's range scan of the blob rows (~5 ms of a 256 MiB
    /// snapshot); its ids are taken only when they give the version's content id (the SHA-256 over every piece's
    /// offset, length and id), so they are the catalog's. Without <paramref name="trust"/> the file is not read.
    /// </summary>
    public static List<BlockPiece> Previous(TraceWriter writer, string storeDir, long versionId, byte[] contentId, long seed, byte[] extentMap, long size,
        bool trust)
    {
        var file = trust ? ReadValid(storeDir, versionId, contentId, seed) : null;
        if (file is not null && BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(8)) == WithIds && WithTheirIds(file, contentId, extentMap, size) is { } pieces)
        {
            return pieces;
        }

        pieces = BlockIngest.Load(writer, extentMap, size);
        var n = pieces.Count;
        if (file is null || BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(8)) != Layout || BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(12)) != n
            || file.Length != HeaderLength + 16L * n + ChecksumLength)
        {
            return pieces;
        }

        for (var i = 0; i < n; i++)
        {
            pieces[i] = pieces[i] with { Fingerprint = ReadUInt128(file.AsSpan(HeaderLength + 16 * i)) };
        }

        return pieces;
    }

    /// <summary>The file's bytes when its checksum, magic, seed, version id and content id are right; else null.</summary>
    private static byte[]? ReadValid(string storeDir, long versionId, byte[] contentId, long seed)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(FilePath(storeDir, versionId));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        return bytes.Length >= HeaderLength + ChecksumLength
            && XxHash128.HashToUInt128(bytes.AsSpan(0, bytes.Length - ChecksumLength)) == ReadUInt128(bytes.AsSpan(bytes.Length - ChecksumLength))
            && bytes.AsSpan(0, 8).SequenceEqual(Magic)
            && BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16)) == seed
            && BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(24)) == versionId
            && bytes.AsSpan(32, 32).SequenceEqual(contentId)
            ? bytes
            : null;
    }

    /// <summary>The pieces of a layout-2 file with its ids and fingerprints, or null unless those ids give the content id.</summary>
    private static List<BlockPiece>? WithTheirIds(byte[] file, byte[] contentId, byte[] extentMap, long size)
    {
        if (!ExtentMap.TryDecode(extentMap, size, out var extents)
            || BinaryPrimitives.ReadInt32LittleEndian(file.AsSpan(12)) != extents.Count
            || file.Length != HeaderLength + (long)WithIdsLength * extents.Count + ChecksumLength)
        {
            return null;
        }

        var pieces = new List<BlockPiece>(extents.Count);
        var hasher = new ExtentMap.ContentHasher();
        for (var i = 0; i < extents.Count; i++)
        {
            var record = file.AsSpan(HeaderLength + WithIdsLength * i, WithIdsLength);
            var id = new BlobId(record[16..].ToArray());
            var e = extents[i];
            hasher.Add(e.Offset, e.Length, id);
            pieces.Add(new BlockPiece(e.Offset, e.Length, e.BlobRowId, id) { Fingerprint = ReadUInt128(record) });
        }

        return hasher.Finish(size).AsSpan().SequenceEqual(contentId) ? pieces : null;
    }

    /// <summary>Writes the fingerprints of version <paramref name="versionId"/> (best effort; a failure only costs the next snapshot time).</summary>
    public static void Write(string storeDir, long versionId, byte[] contentId, long seed, IReadOnlyList<BlockPiece> pieces)
    {
        if (contentId.Length != 32)
        {
            return;
        }

        var ids = pieces.Sum(p => (long)p.Length) >= (long)IdsFromAveragePiece * pieces.Count;
        var each = ids ? WithIdsLength : 16;
        var bytes = new byte[HeaderLength + (long)each * pieces.Count + ChecksumLength];
        Magic.CopyTo(bytes);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8), ids ? WithIds : Layout);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), pieces.Count);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), seed);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(24), versionId);
        contentId.CopyTo(bytes.AsSpan(32));
        for (var i = 0; i < pieces.Count; i++)
        {
            WriteUInt128(bytes.AsSpan(HeaderLength + each * i), pieces[i].Fingerprint);
            if (ids)
            {
                pieces[i].Id.Bytes.CopyTo(bytes.AsSpan(HeaderLength + each * i + 16));
            }
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
