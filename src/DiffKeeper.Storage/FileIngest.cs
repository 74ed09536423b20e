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

    public static IngestedContent Ingest(TraceWriter writer, SafeFileHandle file, long size, bool parallel = false)
    {
        var extents = new List<Extent>();
        var hashed = new List<(long, int, BlobId)>();
        var storedBefore = writer.StoredBytesWritten;
        if (size <= FastCdc.MinSize)
        {
            return IngestSmall(writer, file, size, storedBefore);
        }

        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
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

                var end = IngestRange(writer, file, dataStart, dataEnd, buffer, extents, hashed, parallel);
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

        return new IngestedContent(ExtentMap.Encode(extents), ExtentMap.ContentId(hashed, size), size,
            writer.StoredBytesWritten - storedBefore);
    }

    /// <summary>
    /// A file of at most one chunk: one read, no hole probing (a hole in a file this small reads as zeros and is
    /// stored as data, which restores the same bytes), no batch machinery. Most files of a CI job are like this.
    /// </summary>
    private static IngestedContent IngestSmall(TraceWriter writer, SafeFileHandle file, long size, long storedBefore)
    {
        var buffer = ArrayPool<byte>.Shared.Rent((int)size + 1);
        try
        {
            var n = 0;
            while (n < buffer.Length)
            {
                var r = RandomAccess.Read(file, buffer.AsSpan(n), n);
                if (r == 0)
                {
                    break;
                }

                n += r;
            }

            if (n > size)
            {
                n = (int)size; // it grew while being read: the next event brings the rest
            }

            if (n == 0)
            {
                return new IngestedContent(ExtentMap.Encode([]), ExtentMap.ContentId([], 0), 0, 0);
            }

            var rowId = writer.PutBlob(buffer.AsSpan(0, n), out var id);
            return new IngestedContent(ExtentMap.Encode([new Extent(0, n, rowId)]), ExtentMap.ContentId([(0, n, id)], n), n,
                writer.StoredBytesWritten - storedBefore);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static long IngestRange(TraceWriter writer, SafeFileHandle file, long start, long end, byte[] buffer,
        List<Extent> extents, List<(long, int, BlobId)> hashed, bool parallel)
    {
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
                while (filled < buffer.Length && readPos < end)
                {
                    var want = (int)Math.Min(buffer.Length - filled, end - readPos);
                    var n = RandomAccess.Read(file, buffer.AsSpan(filled, want), readPos);
                    if (n == 0)
                    {
                        eof = true;
                        break;
                    }

                    filled += n;
                    readPos += n;
                }

                if (readPos >= end)
                {
                    eof = true;
                }
            }

            if (consumed >= filled)
            {
                return chunkPos;
            }

            batch.Clear();
            while (consumed < filled && (eof || filled - consumed >= FastCdc.MaxSize))
            {
                var cut = FastCdc.NextCut(buffer.AsSpan(consumed, filled - consumed));
                batch.Add((consumed, cut));
                consumed += cut;
            }

            foreach (var (rowId, id, length) in StoreBatch(writer, buffer, batch, parallel))
            {
                extents.Add(new Extent(chunkPos, length, rowId));
                hashed.Add((chunkPos, length, id));
                chunkPos += length;
            }
        }
    }

    /// <summary>
    /// Stores a batch of chunks of <paramref name="buffer"/>: hashes them and encodes the new ones (on all cores
    /// when <paramref name="parallel"/>), then appends in order on this thread (the writer is single-threaded).
    /// </summary>
    private static List<(long RowId, BlobId Id, int Length)> StoreBatch(TraceWriter writer, byte[] buffer, List<(int Offset, int Length)> batch, bool parallel)
    {
        var ids = new BlobId[batch.Count];
        Run(parallel, batch.Count, i => ids[i] = BlobId.Of(buffer.AsSpan(batch[i].Offset, batch[i].Length)));
        var rows = new long?[batch.Count];
        for (var i = 0; i < batch.Count; i++)
        {
            rows[i] = writer.Find(ids[i]);
        }

        var encoded = new (BlobCodec Codec, int Length, byte[]? Buffer)[batch.Count];
        try
        {
            Run(parallel, batch.Count, i =>
            {
                if (rows[i] is null)
                {
                    var b = ArrayPool<byte>.Shared.Rent(Codecs.Zstd.CompressBound(batch[i].Length));
                    var (codec, length) = TraceWriter.Encode(buffer.AsSpan(batch[i].Offset, batch[i].Length), b);
                    encoded[i] = (codec, length, b);
                }
            });
            var result = new List<(long, BlobId, int)>(batch.Count);
            for (var i = 0; i < batch.Count; i++)
            {
                var (offset, length) = batch[i];
                var row = rows[i] ?? writer.Append(ids[i], length, encoded[i].Codec,
                    encoded[i].Codec == BlobCodec.Raw ? buffer.AsSpan(offset, length) : encoded[i].Buffer.AsSpan(0, encoded[i].Length));
                result.Add((row, ids[i], length));
            }

            return result;
        }
        finally
        {
            foreach (var e in encoded)
            {
                if (e.Buffer is not null)
                {
                    ArrayPool<byte>.Shared.Return(e.Buffer);
                }
            }
        }
    }

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
