using System.Buffers;
using System.Runtime.InteropServices;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage.Chunking;
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

    public static IngestedContent Ingest(TraceWriter writer, SafeFileHandle file, long size)
    {
        var extents = new List<Extent>();
        var hashed = new List<(long, int, BlobId)>();
        var storedBefore = writer.StoredBytesWritten;
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

                var end = IngestRange(writer, file, dataStart, dataEnd, buffer, extents, hashed);
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

    private static long IngestRange(TraceWriter writer, SafeFileHandle file, long start, long end, byte[] buffer,
        List<Extent> extents, List<(long, int, BlobId)> hashed)
    {
        long readPos = start;
        long chunkPos = start;
        var filled = 0;
        var consumed = 0;
        var eof = false;
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

            var span = buffer.AsSpan(consumed, filled - consumed);
            var cut = FastCdc.NextCut(span);
            var chunk = span[..cut];
            var rowId = writer.PutBlob(chunk, out var id);
            extents.Add(new Extent(chunkPos, cut, rowId));
            hashed.Add((chunkPos, cut, id));
            chunkPos += cut;
            consumed += cut;
        }
    }
}
