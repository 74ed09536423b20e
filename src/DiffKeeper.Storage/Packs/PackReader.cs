using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using DiffKeeper.Storage.Codecs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage.Packs;

/// <summary>
/// Reads blob records by location and checks everything on the way: magic, lengths, CRC-32C, codec, and the
/// SHA-256 of the decoded bytes against the blob id. Thread-safe; handles stay open until disposal.
/// </summary>
public sealed class PackReader : IDisposable
{
    private readonly string _traceDir;
    private readonly ConcurrentDictionary<long, SafeFileHandle> _handles = new();

    public PackReader(string traceDir) => _traceDir = traceDir;

    /// <summary>Reads the blob into <paramref name="destination"/> (exactly its raw length) or throws <see cref="BlobDamagedException"/>.</summary>
    public void Read(in BlobLocation loc, Span<byte> destination)
    {
        var packPath = PackFormat.RelativePath(loc.PackId);
        if (loc.RawLength < 0 || loc.RawLength > PackFormat.MaxRawLength || loc.StoredLength < 0 ||
            loc.StoredLength > Zstd.CompressBound(PackFormat.MaxRawLength) || destination.Length != loc.RawLength)
        {
            throw new BlobDamagedException(loc, packPath, $"the catalog gives impossible lengths (raw {loc.RawLength}, stored {loc.StoredLength})");
        }

        SafeFileHandle handle;
        try
        {
            handle = _handles.GetOrAdd(loc.PackId, id => File.OpenHandle(Path.Combine(_traceDir, PackFormat.RelativePath(id))));
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BlobDamagedException(loc, packPath, "the pack file is missing");
        }

        var size = PackFormat.RecordSize(loc.StoredLength);
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var record = buffer.AsSpan(0, size);
            var n = ReadFully(handle, record, loc.Offset);
            if (n < size)
            {
                throw new BlobDamagedException(loc, packPath, $"the pack ends {size - n} bytes before the record does (truncated pack)");
            }

            CheckRecord(loc, packPath, record, destination);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    internal static void CheckRecord(in BlobLocation loc, string packPath, ReadOnlySpan<byte> record, Span<byte> destination)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(record) != PackFormat.RecordMagic)
        {
            throw new BlobDamagedException(loc, packPath, "no record starts there (bad magic)");
        }

        var crcAt = PackFormat.RecordHeaderSize + loc.StoredLength;
        if (Crc32C.Compute(record[..crcAt]) != BinaryPrimitives.ReadUInt32LittleEndian(record[crcAt..]))
        {
            throw new BlobDamagedException(loc, packPath, "checksum mismatch (CRC-32C)");
        }

        var codec = (BlobCodec)record[4];
        var raw = BinaryPrimitives.ReadInt32LittleEndian(record[8..]);
        var stored = BinaryPrimitives.ReadInt32LittleEndian(record[12..]);
        if (raw != loc.RawLength || stored != loc.StoredLength || codec != loc.Codec || !record.Slice(16, 32).SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, packPath, "the record does not match the catalog (id, codec or lengths)");
        }

        var payload = record.Slice(PackFormat.RecordHeaderSize, stored);
        switch (codec)
        {
            case BlobCodec.Raw when stored == raw:
                payload.CopyTo(destination);
                break;
            case BlobCodec.Zstd:
                if (!Zstd.TryDecompress(payload, destination, out var error))
                {
                    throw new BlobDamagedException(loc, packPath, $"zstd cannot decode it ({error})");
                }

                break;
            default:
                throw new BlobDamagedException(loc, packPath, $"unknown codec {(int)codec}");
        }

        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(destination, hash);
        if (!hash.SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, packPath, "its bytes do not hash to its id (SHA-256 mismatch)");
        }
    }

    private static int ReadFully(SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        var total = 0;
        while (total < buffer.Length)
        {
            var n = RandomAccess.Read(handle, buffer[total..], offset + total);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    public void Dispose()
    {
        foreach (var h in _handles.Values)
        {
            h.Dispose();
        }

        _handles.Clear();
    }
}
