using System.Buffers;
using System.Buffers.Binary;
using DiffKeeper.Storage.Codecs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage.Packs;

/// <summary>
/// Appends blob records to one pack file. Contract: <see cref="Append"/> only writes past every byte written
/// before, never overwrites; bytes are durable only after <see cref="Sync"/> returns, and the catalog must not
/// commit a reference to a record before that (the crash protocol). Not thread-safe: one writer.
/// </summary>
public sealed class PackWriter : IDisposable
{
    private readonly SafeFileHandle _handle;
    private bool _dirty;

    private PackWriter(long packId, string path, SafeFileHandle handle, long length)
    {
        PackId = packId;
        FilePath = path;
        _handle = handle;
        Length = length;
    }

    public long PackId { get; }

    public string FilePath { get; }

    /// <summary>Bytes in the pack, header included; the offset of the next record.</summary>
    public long Length { get; private set; }

    /// <summary>Creates a new, empty pack (fails if the file exists) and writes its header.</summary>
    public static PackWriter Create(string traceDir, long packId)
    {
        var path = Path.Combine(traceDir, PackFormat.RelativePath(packId));
        var dir = Path.GetDirectoryName(path)!;
        if (!Directory.Exists(dir))
        {
            Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read);
        Span<byte> header = stackalloc byte[PackFormat.HeaderSize];
        PackFormat.WriteFileHeader(header);
        RandomAccess.Write(handle, header, 0);
        return new PackWriter(packId, path, handle, PackFormat.HeaderSize) { _dirty = true };
    }

    /// <summary>Appends one record; returns its offset. The payload is already encoded with <paramref name="codec"/>.</summary>
    public long Append(BlobId id, BlobCodec codec, int rawLength, ReadOnlySpan<byte> payload)
    {
        var size = PackFormat.RecordSize(payload.Length);
        var buffer = ArrayPool<byte>.Shared.Rent(size);
        try
        {
            var record = buffer.AsSpan(0, size);
            record[..PackFormat.RecordHeaderSize].Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(record, PackFormat.RecordMagic);
            record[4] = (byte)codec;
            BinaryPrimitives.WriteInt32LittleEndian(record[8..], rawLength);
            BinaryPrimitives.WriteInt32LittleEndian(record[12..], payload.Length);
            id.Bytes.CopyTo(record[16..]);
            payload.CopyTo(record[PackFormat.RecordHeaderSize..]);
            var crcAt = PackFormat.RecordHeaderSize + payload.Length;
            BinaryPrimitives.WriteUInt32LittleEndian(record[crcAt..], Crc32C.Compute(record[..crcAt]));
            var offset = Length;
            RandomAccess.Write(_handle, record, offset);
            Length += size;
            _dirty = true;
            return offset;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>Makes every appended record durable (fsync).</summary>
    public void Sync()
    {
        if (_dirty)
        {
            RandomAccess.FlushToDisk(_handle);
            _dirty = false;
        }
    }

    public void Dispose() => _handle.Dispose();
}
