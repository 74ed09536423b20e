using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
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

    /// <summary>
    /// Reads the blob into <paramref name="destination"/> (exactly its raw length) or throws
    /// <see cref="BlobDamagedException"/>. A delta needs its decoded bases concatenated in <paramref name="prefix"/>
    /// and their base digest in <paramref name="baseDigest"/>; <see cref="BlobReader"/> supplies both.
    /// </summary>
    public void Read(in BlobLocation loc, Span<byte> destination, ReadOnlySpan<byte> prefix = default, ReadOnlySpan<byte> baseDigest = default)
    {
        if (destination.Length != loc.RawLength || !loc.HasRecord)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"the catalog gives impossible lengths (raw {loc.RawLength}, stored {loc.StoredLength})");
        }

        if (loc.Codec == BlobCodec.Raw && loc.StoredLength == loc.RawLength && loc.RawLength <= PackFormat.MaxRawLength && TryReadRawInPlace(loc, destination))
        {
            return;
        }

        var buffer = ArrayPool<byte>.Shared.Rent(PackFormat.RecordSize(Math.Max(0, loc.StoredLength)));
        try
        {
            var record = ReadRecord(loc, buffer);
            CheckRecord(loc, record, destination, prefix, baseDigest, decode: true);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// The first <paramref name="destination"/>.Length raw bytes of a group (codec 4), decoded only that far, for
    /// its slices: its header is checked against the catalog, and each member read from it is checked by its own
    /// SHA-256, so the group is not hashed as a whole (its live bytes are its members'; <c>verify</c> checks its CRC).
    /// </summary>
    /// <param name="recordBuffer">Where to read the record (at least <see cref="PackFormat.RecordSize"/> of its stored
    /// length), a caller's buffer reused from group to group; null: one from the shared pool.</param>
    public void ReadGroupPrefix(in BlobLocation loc, Span<byte> destination, byte[]? recordBuffer = null)
    {
        if (loc.Codec != BlobCodec.Group || destination.Length > loc.RawLength)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"it is not a group of at least {destination.Length} bytes (codec {(int)loc.Codec}, raw {loc.RawLength})");
        }

        var own = recordBuffer is not null && recordBuffer.Length >= PackFormat.RecordSize(Math.Max(0, loc.StoredLength));
        var buffer = own ? recordBuffer! : ArrayPool<byte>.Shared.Rent(PackFormat.RecordSize(Math.Max(0, loc.StoredLength)));
        try
        {
            var record = ReadRecord(loc, buffer);
            CheckHeader(loc, record[..PackFormat.RecordHeaderSize], default, decode: true);
            var payload = record.Slice(PackFormat.RecordHeaderSize, loc.StoredLength);
            // A frame of another size decodes no byte of the group the catalog describes, even where it is long enough.
            var error = Zstd.FrameContentSize(payload) is var size && size != loc.RawLength
                ? $"its frame declares {(size is { } n ? $"{n} bytes" : "no content size")}, not {loc.RawLength}"
                : null;
            if (error is null && !Zstd.TryDecompressPrefix(payload, destination, out error))
            {
                error = string.IsNullOrEmpty(error) ? "damaged frame" : error;
            }

            if (!string.IsNullOrEmpty(error))
            {
                throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"zstd cannot decode it ({error})");
            }
        }
        finally
        {
            if (!own)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>
    /// Checks a record without decoding it: it is where the catalog says, complete, its CRC-32C matches, and its
    /// header agrees with the catalog (id, codec, lengths). What <c>verify</c> does without <c>--read-data</c>.
    /// </summary>
    public void CheckFraming(in BlobLocation loc, ReadOnlySpan<byte> baseDigest = default)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(PackFormat.RecordSize(Math.Max(0, loc.StoredLength)));
        try
        {
            var record = ReadRecord(loc, buffer);
            CheckRecord(loc, record, [], default, baseDigest, decode: false);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// A blob stored raw (incompressible data: most of a big file's bytes) is read by one preadv straight into
    /// <paramref name="destination"/>, with its header and CRC beside it, so the bytes are not copied once more
    /// out of a record buffer. False when the read came up short: the caller's general path then names the damage.
    /// </summary>
    private unsafe bool TryReadRawInPlace(in BlobLocation loc, Span<byte> destination)
    {
        var handle = Handle(loc);
        Span<byte> header = stackalloc byte[PackFormat.RecordHeaderSize + PackFormat.RecordTrailerSize];
        fixed (byte* h = header)
        fixed (byte* d = destination)
        {
            var iov = stackalloc Libc.Iovec[3];
            iov[0] = new Libc.Iovec(h, PackFormat.RecordHeaderSize);
            iov[1] = new Libc.Iovec(d, destination.Length);
            iov[2] = new Libc.Iovec(h + PackFormat.RecordHeaderSize, PackFormat.RecordTrailerSize);
            var want = PackFormat.RecordSize(destination.Length);
            var n = Libc.Preadv((int)handle.DangerousGetHandle(), iov, 3, loc.Offset);
            if (n != want)
            {
                return false;
            }
        }

        CheckHeader(loc, header[..PackFormat.RecordHeaderSize], default, decode: true);
        CheckHash(loc, destination);
        return true;
    }

    private SafeFileHandle Handle(in BlobLocation loc)
    {
        try
        {
            // The factory captures nothing: a lambda over this allocated a delegate at every read.
            return _handles.GetOrAdd(loc.PackId, static (id, dir) => TraceFile.OpenRegular(Path.Combine(dir, PackFormat.RelativePath(id))), _traceDir);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "the pack file is missing");
        }
        catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "the pack file is not a regular file");
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw OsError.At(e, "read the pack file", Path.Combine(_traceDir, PackFormat.RelativePath(loc.PackId)));
        }
    }

    /// <summary>
    /// Reads a whole record (header, payload, CRC) into <paramref name="buffer"/> (at least
    /// <see cref="PackFormat.RecordSize"/> of its stored length) and returns it, checking only that it is
    /// complete; for repacking, which copies records byte for byte after <see cref="CheckFraming"/>.
    /// </summary>
    public Span<byte> ReadRecord(in BlobLocation loc, byte[] buffer)
    {
        var maxRaw = PackFormat.MaxRawFor(loc.Codec);
        if (!loc.HasRecord || loc.RawLength < 0 || loc.RawLength > maxRaw || loc.StoredLength < 0 ||
            loc.StoredLength > Zstd.CompressBound(maxRaw))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"the catalog gives impossible lengths (raw {loc.RawLength}, stored {loc.StoredLength})");
        }

        var handle = Handle(loc);
        var size = PackFormat.RecordSize(loc.StoredLength);
        var record = buffer.AsSpan(0, size);
        var n = ReadFully(handle, record, loc.Offset);
        if (n < size)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"the pack ends {size - n} bytes before the record does (truncated pack)");
        }

        return record;
    }

    internal static void CheckRecord(in BlobLocation loc, ReadOnlySpan<byte> record, Span<byte> destination,
        ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> baseDigest, bool decode)
    {
        // Decoding checks every byte that makes the blob without the CRC: the header field by field, the payload
        // by the SHA-256 of what it decodes to. The CRC is for reads that do not decode (verify, repack); on a
        // decoding read it would be a second pass over every byte for nothing (a flipped bit in the CRC itself
        // changes no content, and verify still reports it).
        var crcAt = PackFormat.RecordHeaderSize + loc.StoredLength;
        if (!decode && BinaryPrimitives.ReadUInt32LittleEndian(record) == PackFormat.RecordMagic &&
            Crc32C.Compute(record[..crcAt]) != BinaryPrimitives.ReadUInt32LittleEndian(record[crcAt..]))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "checksum mismatch (CRC-32C)");
        }

        CheckHeader(loc, record[..PackFormat.RecordHeaderSize], baseDigest, decode);
        if (!decode)
        {
            return;
        }

        var codec = loc.Codec;
        var payload = record.Slice(PackFormat.RecordHeaderSize, loc.StoredLength);
        string? error = null;
        switch (codec)
        {
            case BlobCodec.Raw when loc.StoredLength == loc.RawLength:
                payload.CopyTo(destination);
                break;
            case BlobCodec.Zstd or BlobCodec.Group:
                Zstd.TryDecompress(payload, destination, out error);
                break;
            case BlobCodec.ZstdDelta or BlobCodec.BsDiff:
                DeltaCodec.TryDecode(codec, prefix, payload, destination, out error);
                break;
            default:
                throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"unknown codec {(int)codec}");
        }

        if (!string.IsNullOrEmpty(error))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), $"{CodecName(codec)} cannot decode it ({error})");
        }

        CheckHash(loc, destination);
    }

    /// <summary>The record header against the catalog: magic, codec, lengths, id, base digest, zero fields.</summary>
    private static void CheckHeader(in BlobLocation loc, ReadOnlySpan<byte> header, ReadOnlySpan<byte> baseDigest, bool decode)
    {
        if (BinaryPrimitives.ReadUInt32LittleEndian(header) != PackFormat.RecordMagic)
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "no record starts there (bad magic)");
        }

        var codec = (BlobCodec)header[4];
        var raw = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        var stored = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        if (raw != loc.RawLength || stored != loc.StoredLength || codec != loc.Codec || !header.Slice(16, 32).SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "the record does not match the catalog (id, codec or lengths)");
        }

        if (loc.IsDelta && (decode || !baseDigest.IsEmpty) && !header.Slice(48, 32).SequenceEqual(baseDigest))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "its delta bases in the catalog are not the ones it was encoded against (base digest mismatch)");
        }

        if (decode && (header[5] != 0 || header[6] != 0 || header[7] != 0 || (!loc.IsDelta && header.Slice(48, 32).ContainsAnyExcept((byte)0))))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "checksum mismatch (a header field that must be zero is not)");
        }
    }

    private static void CheckHash(in BlobLocation loc, ReadOnlySpan<byte> bytes)
    {
        Span<byte> hash = stackalloc byte[32];
        Sha256.HashData(bytes, hash);
        if (!hash.SequenceEqual(loc.Id.Bytes))
        {
            throw new BlobDamagedException(loc, PackFormat.RelativePath(loc.PackId), "its bytes do not hash to its id (SHA-256 mismatch)");
        }
    }

    private static string CodecName(BlobCodec codec) => codec switch
    {
        BlobCodec.ZstdDelta => "zstd (delta)",
        BlobCodec.BsDiff => "bsdiff",
        _ => "zstd",
    };

    /// <summary>pread until <paramref name="buffer"/> is full or the file ends; returns the bytes read.</summary>
    public static int ReadFully(SafeFileHandle handle, Span<byte> buffer, long offset)
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
