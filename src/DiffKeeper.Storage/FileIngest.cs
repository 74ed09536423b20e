using System.Buffers;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Chunking;
using DiffKeeper.Storage.Packs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>The stored content of one file: its extent map, content id and size as read.</summary>
public sealed record IngestedContent(byte[] Extents, byte[] ContentId, long Size, long StoredBytes);

/// <summary>
/// Reads a file's data extents (holes skipped with SEEK_DATA/SEEK_HOLE) with positioned reads, cuts them into
/// FastCDC chunks and stores each chunk through the writer. The file may change while it is read: the result is
/// then what the reads returned, and the capture layer's next event makes the caller read it again.
/// </summary>
public static class FileIngest
{
    private const int BufferSize = 4 << 20;

    /// <param name="previous">The extent map of the path's version this content replaces, asked only when a chunk is
    /// new: a small file's chunks may be stored as deltas against it (<see cref="TraceWriter.TryDelta"/>).</param>
    public static IngestedContent Ingest(TraceWriter writer, SafeFileHandle file, long size, bool parallel = false, Func<byte[]?>? previous = null)
    {
        if (size <= FastCdc.MinSize)
        {
            return IngestSmall(writer, file, size, previous);
        }

        var content = new ChunkedContent(writer, size <= Maintenance.Grouper.MaxMember ? previous : null);

        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        Native.BufferPrefault.Once(buffer, (int)Math.Min(size, buffer.Length)); // what the reads fill, in one call
        var fd = (int)file.DangerousGetHandle();
        long actualEnd = 0;
        try
        {
            long pos = 0;
            while (pos < size)
            {
                var dataStart = Libc.Lseek(fd, pos, Libc.SEEK_DATA);
                if (dataStart < 0)
                {
                    var errno = Marshal.GetLastPInvokeError();
                    if (errno == Libc.ENXIO)
                    {
                        break; // only a hole remains
                    }

                    dataStart = pos; // SEEK_DATA unsupported: treat everything as data
                }

                if (dataStart >= size)
                {
                    break;
                }

                var dataEnd = Libc.Lseek(fd, dataStart, Libc.SEEK_HOLE);
                if (dataEnd < 0 || dataEnd > size)
                {
                    dataEnd = size;
                }

                var end = IngestRange(content, file, dataStart, dataEnd, buffer, parallel);
                actualEnd = Math.Max(actualEnd, end);
                if (end < dataEnd)
                {
                    size = end; // the file shrank while being read
                    break;
                }

                pos = dataEnd;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        return content.Finish(size);
    }

    /// <summary>
    /// A file of at most one chunk: one read, no hole probing (a hole in a file this small reads as zeros and is
    /// stored as data, which restores the same bytes), no batch machinery. Most files of a CI job are like this.
    /// </summary>
    private static IngestedContent IngestSmall(TraceWriter writer, SafeFileHandle file, long size, Func<byte[]?>? previous)
    {
        var buffer = ArrayPool<byte>.Shared.Rent((int)size + 1);
        try
        {
            var n = 0;
            while (n < buffer.Length)
            {
                var r = Pread(file, buffer.AsSpan(n), n);
                n += r;
                if (r == 0 || n >= size)
                {
                    break; // all it had when stat'ed: no second read just to meet the end of the file
                }
            }

            if (n > size)
            {
                n = (int)size; // it grew while being read: the next event brings the rest
            }

            var content = new ChunkedContent(writer);
            if (n > 0)
            {
                var rowId = writer.PutBlob(buffer.AsSpan(0, n), out var id, previous);
                content.Add(0, n, rowId, id);
            }

            return content.Finish(n);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// One pread on the descriptor. RandomAccess.Read on a handle made from a descriptor first asks the kernel
    /// whether it can seek (an lseek per handle): one system call of the ~6 a small file costs the recorder.
    /// </summary>
    private static unsafe int Pread(SafeFileHandle file, Span<byte> destination, long offset)
    {
        fixed (byte* p = destination)
        {
            while (true)
            {
                var r = Libc.Pread((int)file.DangerousGetHandle(), p, destination.Length, offset);
                if (r >= 0)
                {
                    return (int)r;
                }

                var errno = Marshal.GetLastPInvokeError();
                if (errno != Libc.EINTR)
                {
                    throw new IOException($"cannot read: {Libc.StrError(errno)}");
                }
            }
        }
    }

    private static long IngestRange(ChunkedContent content, SafeFileHandle file, long start, long end, byte[] buffer, bool parallel)
    {
        if (parallel && end - start > buffer.Length)
        {
            // Only a range longer than one buffer has a next read to overlap with hashing.
            return IngestRangePipelined(content, file, start, end, buffer);
        }

        long readPos = start;
        long chunkPos = start;
        var filled = 0;
        var consumed = 0;
        var eof = false;
        var batch = new List<(int Offset, int Length)>();
        while (true)
        {
            // Keep at least one maximal chunk in the buffer so cut points do not depend on read sizes.
            if (!eof && filled - consumed < FastCdc.MaxSize)
            {
                Buffer.BlockCopy(buffer, consumed, buffer, 0, filled - consumed);
                filled -= consumed;
                consumed = 0;
                (filled, readPos, eof) = Fill(file, buffer, filled, readPos, end);
            }

            if (consumed >= filled)
            {
                return chunkPos;
            }

            batch.Clear();
            consumed = ChunkedContent.Cut(buffer, consumed, filled, eof, batch);
            var ids = new BlobId[batch.Count];
            Hash(buffer, batch, ids, parallel: false);
            chunkPos = content.Store(buffer, batch, ids, parallel: false, chunkPos, endsRange: eof && consumed >= filled);
        }
    }

    /// <summary>
    /// <see cref="IngestRange"/> on every core: two buffers take turns, and while one batch's chunks are hashed
    /// in the background this thread reads and cuts the next one, then stores the batch before (finding
    /// duplicates, encoding the new chunks in parallel, appending in order). Reading and cutting are sequential
    /// by nature (cut points depend on the previous cut); hashing is the other half of the work, so overlapping
    /// the two keeps both cores busy. Chunks and blobs are the same as the sequential path's.
    /// </summary>
    private static long IngestRangePipelined(ChunkedContent content, SafeFileHandle file, long start, long end, byte[] first)
    {
        var second = ArrayPool<byte>.Shared.Rent(first.Length);
        Native.BufferPrefault.Once(second, second.Length);
        byte[][] buffers = [first, second];
        (Task Hashing, byte[] Buffer, List<(int Offset, int Length)> Batch, BlobId[] Ids)? pending = null;
        long readPos = start;
        long chunkPos = start;
        int filled = 0, consumed = 0;
        var eof = false;
        var turn = 0;
        try
        {
            while (true)
            {
                var buffer = buffers[turn & 1];
                if (turn > 0)
                {
                    // The tail the previous buffer could not cut yet starts this one (the batch that used this
                    // buffer before was stored at the end of the previous turn).
                    var previous = buffers[(turn - 1) & 1];
                    Buffer.BlockCopy(previous, consumed, buffer, 0, filled - consumed);
                    filled -= consumed;
                    consumed = 0;
                }

                if (!eof)
                {
                    (filled, readPos, eof) = Fill(file, buffer, filled, readPos, end);
                }

                var batch = new List<(int Offset, int Length)>();
                consumed = ChunkedContent.Cut(buffer, consumed, filled, eof, batch);
                var ids = new BlobId[batch.Count];
                var hashing = batch.Count == 0 ? Task.CompletedTask : Task.Run(() => Hash(buffer, batch, ids, parallel: true));
                var previousBatch = pending;
                pending = (hashing, buffer, batch, ids); // from here on, the finally waits for this batch's hashing
                if (previousBatch is { } p)
                {
                    p.Hashing.GetAwaiter().GetResult();
                    chunkPos = content.Store(p.Buffer, p.Batch, p.Ids, parallel: true, chunkPos);
                }

                if (consumed >= filled && eof)
                {
                    break;
                }

                turn++;
            }

            var last = pending!.Value;
            pending = null;
            last.Hashing.GetAwaiter().GetResult();
            return content.Store(last.Buffer, last.Batch, last.Ids, parallel: true, chunkPos, endsRange: true);
        }
        finally
        {
            // Never hand a buffer back while a hashing task may still read it.
            try
            {
                pending?.Hashing.Wait();
            }
            catch (AggregateException)
            {
                // the exception that matters is already propagating
            }

            ArrayPool<byte>.Shared.Return(second);
        }
    }

    /// <summary>Reads from <paramref name="readPos"/> until the buffer is full or the range ends.</summary>
    private static (int Filled, long ReadPos, bool Eof) Fill(SafeFileHandle file, byte[] buffer, int filled, long readPos, long end)
    {
        while (filled < buffer.Length && readPos < end)
        {
            var want = (int)Math.Min(buffer.Length - filled, end - readPos);
            var n = RandomAccess.Read(file, buffer.AsSpan(filled, want), readPos);
            if (n == 0)
            {
                return (filled, readPos, true);
            }

            filled += n;
            readPos += n;
        }

        return (filled, readPos, readPos >= end);
    }

    private static void Hash(byte[] buffer, List<(int Offset, int Length)> batch, BlobId[] ids, bool parallel) =>
        Run(parallel, batch.Count, i => ids[i] = BlobId.Of(buffer.AsSpan(batch[i].Offset, batch[i].Length)));

    /// <summary>
    /// A chunk encoded for its record: the codec, the payload's length, and the pooled buffer that holds it (the raw
    /// bytes stay the caller's). <paramref name="Align"/>: a changed block stored raw that goes to the writer's aligned
    /// group (<see cref="TraceWriter.TryAlignedGroup"/>) when it can.
    /// </summary>
    internal readonly record struct Encoded(BlobCodec Codec, int Length, byte[]? Buffer, bool Align = false)
    {
        /// <summary>Whether it was encoded (a raw chunk has no buffer; no chunk is empty); default: not yet.</summary>
        public bool Made => Length > 0 || Buffer is not null;
    }

    /// <summary>
    /// Encodes <paramref name="data"/> into a buffer rented from the shared pool, which the caller returns. A chunk zstd
    /// cannot shrink is stored raw from the caller's bytes and has no buffer: it goes back at once, so the next chunk's
    /// try on this thread writes into the same, already mapped pages (random data: every chunk).
    /// </summary>
    internal static Encoded Encode(ReadOnlySpan<byte> data)
    {
        var b = ArrayPool<byte>.Shared.Rent(Codecs.Zstd.CompressBound(data.Length));
        Native.BufferPrefault.Once(b, Codecs.Zstd.CompressBound(data.Length));
        var (codec, length) = TraceWriter.Encode(data, b);
        if (codec == BlobCodec.Raw)
        {
            ArrayPool<byte>.Shared.Return(b);
            return new Encoded(codec, length, null);
        }

        return new Encoded(codec, length, b);
    }

    /// <summary>
    /// Stores a batch of chunks of <paramref name="buffer"/>, already hashed into <paramref name="ids"/>: encodes the
    /// new ones (on all cores when <paramref name="parallel"/>), then appends in order on this thread (the writer is
    /// single-threaded).
    /// </summary>
    /// <param name="endsRange">The batch's last chunk ends a data range of the file (the end of a small file's data,
    /// or of a growing file's): it may go to the writer's group (<see cref="TraceWriter.TryGroup"/>), and so may the
    /// first chunk when it extends the member stored before it (a growing file's tail, cut at last). Other chunks of a
    /// file (the middle of a big one) are stored whole: compaction turns their superseded states into deltas. Null
    /// (a big file's blocks): nothing goes to a group by that rule.</param>
    /// <param name="groupBelow">New chunks shorter than this go to the writer's group whatever their place (a big
    /// file's small pieces: <see cref="BigFiles.PieceStore"/>).</param>
    /// <param name="encoded">Per chunk, its encoding when the caller made it already (no buffer: encoded here).</param>
    /// <param name="previous">The extent map of the version this file's content replaces (a small file's: see
    /// <see cref="TraceWriter.TryDelta"/>); a new chunk is stored as a delta against it when that is worth it.</param>
    internal static List<(long RowId, BlobId Id, int Length)> StoreBatch(TraceWriter writer, ReadOnlyMemory<byte> buffer, List<(int Offset, int Length)> batch,
        BlobId[] ids, bool parallel, bool? endsRange = null, int groupBelow = 0, Encoded[]? encoded = null, Func<byte[]?>? previous = null)
    {
        var result = new List<(long RowId, BlobId Id, int Length)>(batch.Count);
        StoreBatch(writer, buffer, batch, ids, parallel, result, endsRange, groupBelow, encoded, previous);
        return result;
    }

    /// <summary>
    /// The overload above, into <paramref name="into"/> (cleared first): the rows, ids and lengths of the batch's chunks in order. Its
    /// working arrays are pooled, so a caller that keeps <paramref name="into"/> stores a batch without allocating
    /// (the recorder stores a growing file's tail at nearly every write).
    /// </summary>
    internal static void StoreBatch(TraceWriter writer, ReadOnlyMemory<byte> buffer, List<(int Offset, int Length)> batch, BlobId[] ids, bool parallel,
        List<(long RowId, BlobId Id, int Length)> into, bool? endsRange = null, int groupBelow = 0, Encoded[]? encoded = null, Func<byte[]?>? previous = null)
    {
        into.Clear();
        var count = batch.Count;
        var rows = ArrayPool<long?>.Shared.Rent(count);
        var mine = ArrayPool<Encoded>.Shared.Rent(count);
        Array.Clear(mine, 0, count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                rows[i] = writer.Find(ids[i]);
                if (rows[i] is null && previous is not null && writer.TryDelta(buffer.Span.Slice(batch[i].Offset, batch[i].Length), ids[i], previous) is { } delta)
                {
                    rows[i] = delta;
                    continue;
                }

                if (rows[i] is null && batch[i].Length < groupBelow)
                {
                    rows[i] = writer.TryGroup(buffer.Span.Slice(batch[i].Offset, batch[i].Length), ids[i]); // null: stored whole below
                    continue;
                }

                var last = endsRange == true && i == count - 1;
                if (endsRange is not null && (last || i == 0))
                {
                    var data = buffer.Span.Slice(batch[i].Offset, batch[i].Length);
                    if (rows[i] is { } found)
                    {
                        writer.NoteFound(data, found);
                    }
                    else
                    {
                        rows[i] = writer.TryGroup(data, ids[i], extendOnly: !last);
                    }
                }
            }

            EncodeNew(parallel, buffer, batch, rows, encoded, mine);
            for (var i = 0; i < count; i++)
            {
                var (offset, length) = batch[i];
                var e = encoded?[i].Made == true ? encoded![i] : mine[i];
                var row = rows[i] ?? (e.Align ? writer.TryAlignedGroup(buffer.Span.Slice(offset, length), ids[i]) : null) ?? writer.Append(ids[i], length, e.Codec,
                    e.Codec == BlobCodec.Raw ? buffer.Span.Slice(offset, length) : e.Buffer.AsSpan(0, e.Length));
                into.Add((row, ids[i], length));
            }
        }
        finally
        {
            for (var i = 0; i < count; i++)
            {
                if (mine[i].Buffer is { } b)
                {
                    ArrayPool<byte>.Shared.Return(b);
                }
            }

            ArrayPool<Encoded>.Shared.Return(mine, clearArray: true);
            ArrayPool<long?>.Shared.Return(rows);
        }
    }

    // Encodes the chunks of a batch that are new (no row yet) and not encoded by the caller into mine[i]. Apart from
    // StoreBatch, and the parallel loop apart again: a lambda's captures are allocated where its method starts, and
    // the sequential path (the recorder's) needs none.
    private static void EncodeNew(bool parallel, ReadOnlyMemory<byte> buffer, List<(int Offset, int Length)> batch, long?[] rows, Encoded[]? given, Encoded[] mine)
    {
        if (parallel && batch.Count >= 4)
        {
            EncodeNewParallel(buffer, batch, rows, given, mine);
            return;
        }

        for (var i = 0; i < batch.Count; i++)
        {
            if (rows[i] is null && given?[i].Made != true)
            {
                mine[i] = Encode(buffer.Span.Slice(batch[i].Offset, batch[i].Length));
            }
        }
    }

    private static void EncodeNewParallel(ReadOnlyMemory<byte> buffer, List<(int Offset, int Length)> batch, long?[] rows, Encoded[]? given, Encoded[] mine) =>
        Run(true, batch.Count, i =>
        {
            if (rows[i] is null && given?[i].Made != true)
            {
                mine[i] = Encode(buffer.Span.Slice(batch[i].Offset, batch[i].Length));
            }
        });

    private static void Run(bool parallel, int count, Action<int> body)
    {
        if (!parallel || count < 4)
        {
            for (var i = 0; i < count; i++)
            {
                body(i);
            }
        }
        else
        {
            System.Threading.Tasks.Parallel.For(0, count, body);
        }
    }
}
