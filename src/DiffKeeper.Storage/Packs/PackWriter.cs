using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage.Codecs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage.Packs;

/// <summary>
/// Appends blob records to one pack file. Contract: <see cref="Append"/> only writes past every byte written
/// before, never overwrites; records may stay in memory until <see cref="Sync"/>, and are durable (and visible
/// to readers) only after it returns, so the catalog must not commit a reference to a record before that (the
/// crash protocol). Not thread-safe: one writer.
/// </summary>
public sealed class PackWriter : IDisposable
{
    private const int BufferSize = 1 << 20;
    private readonly SafeFileHandle _handle;
    private readonly byte[] _buffer = new byte[BufferSize + PackFormat.RecordSize(PackFormat.MaxRawLength + 4096)];
    private const long WritebackStep = 8 << 20;
    private const int PopulateStep = 256 << 10;
    private int _buffered;
    private int _populated;
    private bool _dirty;
    private long _writebackFrom;
    private readonly string _path;

    private PackWriter(long packId, string path, SafeFileHandle handle, long length)
    {
        PackId = packId;
        _path = path;
        _handle = handle;
        Length = length;
    }

    public long PackId { get; }

    /// <summary>Bytes in the pack, header included; the offset of the next record.</summary>
    public long Length { get; private set; }

    /// <summary>Creates a new, empty pack (fails if the file exists) and writes its header.</summary>
    public static PackWriter Create(string traceDir, long packId)
    {
        var path = Path.Combine(traceDir, PackFormat.RelativePath(packId));
        var dir = Path.GetDirectoryName(path)!;
        SafeFileHandle? handle = null;
        try
        {
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read);
            Span<byte> header = stackalloc byte[PackFormat.HeaderSize];
            PackFormat.WriteFileHeader(header);
            RandomAccess.Write(handle, header, 0);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            handle?.Dispose();
            throw Failed(e, path);
        }

        return new PackWriter(packId, path, handle, PackFormat.HeaderSize) { _dirty = true };
    }

    /// <summary>
    /// Opens an existing pack to append after its first <paramref name="committedSize"/> bytes, or returns null when
    /// the file is not exactly that long (a tail a failed step left, a damaged or missing file): the caller then
    /// starts a new pack. Nothing below <paramref name="committedSize"/> is ever written again. The caller
    /// guarantees that no other writer appends to the pack (maintenance continues only its own earlier packs).
    /// </summary>
    public static PackWriter? OpenAtEnd(string traceDir, long packId, long committedSize)
    {
        var path = Path.Combine(traceDir, PackFormat.RelativePath(packId));
        SafeFileHandle handle;
        try
        {
            handle = TraceFile.OpenRegular(path, write: true);
        }
        catch (Exception e) when (e is FileNotFoundException or DiffKeeperException)
        {
            return null;
        }

        if (committedSize <= PackFormat.HeaderSize || RandomAccess.GetLength(handle) != committedSize)
        {
            handle.Dispose();
            return null;
        }

        return new PackWriter(packId, path, handle, committedSize) { _writebackFrom = committedSize };
    }

    /// <summary>
    /// Whether records with a payload of <see cref="DirectFrom"/> bytes or more are written at once from the caller's
    /// payload (one pwritev of header, payload and checksum, after the buffered records) instead of being copied into
    /// the buffer first. `snapshot` sets it: its records are compressed 64 KiB blocks, and copying them cost a copy of
    /// every stored byte and a page fault for each page of a fresh writer's 1 MiB buffer (~300 of a W4 version's
    /// ~2,100). Off for everything else (`record`'s write pattern was not measured with it).
    /// </summary>
    public bool WritesLargeRecordsDirect { get; set; }

    /// <summary>The payload size from which <see cref="WritesLargeRecordsDirect"/> applies.</summary>
    public const int DirectFrom = 32 << 10;

    /// <summary>Appends one record; returns its offset. The payload is already encoded with <paramref name="codec"/>.</summary>
    public long Append(BlobId id, BlobCodec codec, int rawLength, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> baseDigest = default)
    {
        var size = PackFormat.RecordSize(payload.Length);
        if (WritesLargeRecordsDirect && payload.Length >= DirectFrom)
        {
            return AppendDirect(id, codec, rawLength, payload, baseDigest);
        }

        if (_buffered + size > _buffer.Length)
        {
            Flush();
        }

        Populate(_buffered + size);
        var record = _buffer.AsSpan(_buffered, size);
        WriteHeader(record, id, codec, rawLength, payload.Length, baseDigest);
        payload.CopyTo(record[PackFormat.RecordHeaderSize..]);
        var crcAt = PackFormat.RecordHeaderSize + payload.Length;
        BinaryPrimitives.WriteUInt32LittleEndian(record[crcAt..], Crc32C.Compute(record[..crcAt]));
        _buffered += size;
        var offset = Length;
        Length += size;
        _dirty = true;
        return offset;
    }

    private static void WriteHeader(Span<byte> record, BlobId id, BlobCodec codec, int rawLength, int storedLength, ReadOnlySpan<byte> baseDigest)
    {
        record[..PackFormat.RecordHeaderSize].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(record, PackFormat.RecordMagic);
        record[PackFormat.RecordCodecOffset] = (byte)codec;
        BinaryPrimitives.WriteInt32LittleEndian(record[8..], rawLength);
        BinaryPrimitives.WriteInt32LittleEndian(record[12..], storedLength);
        id.Bytes.CopyTo(record[16..]);
        baseDigest.CopyTo(record[48..]);
    }

    /// <summary>Writes one record straight from <paramref name="payload"/>, after every buffered one (records stay in order).</summary>
    private unsafe long AppendDirect(BlobId id, BlobCodec codec, int rawLength, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> baseDigest)
    {
        Flush();
        Span<byte> header = stackalloc byte[PackFormat.RecordHeaderSize];
        WriteHeader(header, id, codec, rawLength, payload.Length, baseDigest);
        Span<byte> trailer = stackalloc byte[PackFormat.RecordTrailerSize];
        BinaryPrimitives.WriteUInt32LittleEndian(trailer, Crc32C.Append(Crc32C.Compute(header), payload));
        var offset = Length;
        var size = PackFormat.RecordSize(payload.Length);
        nint written;
        fixed (byte* h = header, p = payload, t = trailer)
        {
            var iov = stackalloc Native.Interop.Libc.Iovec[3];
            iov[0] = new Native.Interop.Libc.Iovec(h, header.Length);
            iov[1] = new Native.Interop.Libc.Iovec(p, payload.Length);
            iov[2] = new Native.Interop.Libc.Iovec(t, trailer.Length);
            written = Native.Interop.Libc.Pwritev((int)_handle.DangerousGetHandle(), iov, 3, offset);
        }

        if (written < 0)
        {
            throw OsError.At(System.Runtime.InteropServices.Marshal.GetLastPInvokeError(), "write the pack", _path);
        }

        if (written < size)
        {
            // A short write (a signal, a full disk on the next call): the rest, which reports the failure if any.
            var record = new byte[size];
            header.CopyTo(record);
            payload.CopyTo(record.AsSpan(header.Length));
            trailer.CopyTo(record.AsSpan(header.Length + payload.Length));
            try
            {
                RandomAccess.Write(_handle, record.AsSpan((int)written), offset + written);
            }
            catch (Exception e) when (OsError.IsOsFailure(e))
            {
                throw Failed(e, _path);
            }
        }

        Length += size;
        _dirty = true;
        StartWriteback();
        return offset;
    }

    /// <summary>Appends a complete record read from another pack (repacking: records hold nothing pack-specific); returns its offset.</summary>
    public long AppendRecord(ReadOnlySpan<byte> record)
    {
        if (_buffered + record.Length > _buffer.Length)
        {
            Flush();
        }

        Populate(_buffered + record.Length);
        record.CopyTo(_buffer.AsSpan(_buffered));
        _buffered += record.Length;
        var offset = Length;
        Length += record.Length;
        _dirty = true;
        return offset;
    }

    /// <summary>
    /// Maps the buffer's pages up to <paramref name="end"/> ahead of the copy, a step at a time (<see cref="BufferPrefault"/>):
    /// a fresh writer's buffer took a page fault per page, ~280 of a W1 `record`'s ~2,270. A writer that stores little
    /// maps one step.
    /// </summary>
    private void Populate(int end)
    {
        if (end <= _populated)
        {
            return;
        }

        var to = Math.Min(_buffer.Length, Math.Max(end, _populated + PopulateStep));
        Native.BufferPrefault.Populate(_buffer.AsSpan(_populated, to - _populated));
        _populated = to;
    }

    /// <summary>Makes every appended record durable: writes what is buffered, then fsync.</summary>
    public void Sync()
    {
        Flush();
        if (_dirty)
        {
            FlushToDisk();
            _dirty = false;
        }
    }

    private void FlushToDisk()
    {
        try
        {
            RandomAccess.FlushToDisk(_handle);
        }
        catch (Exception e) when (OsError.IsOsFailure(e))
        {
            throw Failed(e, _path);
        }
    }

    /// <summary>
    /// As <see cref="Sync"/>, with the fsync on another thread: writes what is buffered here, then returns a task that
    /// completes when every record appended so far is durable (and faults with the write's failure). The caller may
    /// go on with other work meanwhile, but must wait for the task before it commits a reference to any of these
    /// records, and must not append or sync until it has (one writer). A failed fsync leaves the pack unsynced, so a
    /// later <see cref="Sync"/> tries again.
    /// </summary>
    public Task StartSync()
    {
        Flush();
        if (!_dirty)
        {
            return Task.CompletedTask;
        }

        _dirty = false;
        return Task.Run(() =>
        {
            try
            {
                FlushToDisk();
            }
            catch (DiffKeeperException)
            {
                _dirty = true; // read only after the caller waited for this task
                throw;
            }
        });
    }

    // Records are gathered in memory and written in large pwrites: on virtual disks every small write that
    // dirties the file costs a writeback kick, which made small records the recorder's main cost.
    internal void Flush()
    {
        if (_buffered > 0)
        {
            try
            {
                RandomAccess.Write(_handle, _buffer.AsSpan(0, _buffered), Length - _buffered);
            }
            catch (Exception e) when (OsError.IsOsFailure(e))
            {
                throw Failed(e, _path);
            }

            _buffered = 0;
            StartWriteback();
        }
    }

    /// <summary>
    /// Starts the disk writing each 8 MiB written so far (sync_file_range, not waiting): with gigabytes of RAM the
    /// kernel would otherwise hold a big ingest's pages dirty until <see cref="Sync"/>, which then waited for all
    /// of them while the CPU sat idle (1 GiB: about 1 s of the 4 s `record` took). Durability still comes only
    /// from <see cref="Sync"/>.
    /// </summary>
    private void StartWriteback()
    {
        if (Length - _writebackFrom < WritebackStep)
        {
            return;
        }

        _ = Native.Interop.Libc.SyncFileRange((int)_handle.DangerousGetHandle(), _writebackFrom, Length - _writebackFrom, Native.Interop.Libc.SYNC_FILE_RANGE_WRITE);
        _writebackFrom = Length;
    }

    /// <summary>
    /// A failed write of the store is not an IOException: callers that skip a recorded file they cannot read
    /// (permission denied) must not skip the store's own failure (disk full) the same way.
    /// </summary>
    private static DiffKeeperException Failed(Exception e, string path) => OsError.At(e, "write the pack", path);

    /// <summary>
    /// Drops the records not yet written and cuts the file back to <paramref name="keep"/> bytes (its committed
    /// size), freeing the space uncommitted records took; then closes it. After a failed write (disk full).
    /// </summary>
    internal void Discard(long keep)
    {
        _buffered = 0;
        Length = keep;
        try
        {
            RandomAccess.SetLength(_handle, keep);
        }
        finally
        {
            _handle.Dispose();
        }
    }

    public void Dispose()
    {
        Flush();
        _handle.Dispose();
    }
}
