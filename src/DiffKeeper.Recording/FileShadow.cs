using DiffKeeper.Storage;
using DiffKeeper.Storage.Chunking;

namespace DiffKeeper.Recording;

/// <summary>
/// The recorder's own copy of a file's bytes, kept while a capture backend delivers exact changes (write payloads,
/// truncates): each change is applied here and a version is stored from these bytes, without reading the file, so
/// the version is the state right after that change even when the file has changed again (or is gone) since.
/// </summary>
internal sealed class FileShadow
{
    private byte[] _data;

    // The chunks of the last Store, and how far the bytes are unchanged since: a file written by appends (tar,
    // a log) is stored after every write, and re-cutting and re-hashing all of it each time made that quadratic.
    private readonly List<(Extent Extent, BlobId Id)> _chunks = [];
    private long _cleanUpTo;

    private FileShadow(byte[] data, long size)
    {
        _data = data;
        Size = size;
    }

    public long Size { get; private set; }

    /// <summary>The file's permission bits as the backend reported them (created with, or changed to); null: unknown, take the file's.</summary>
    public int? Mode { get; set; }

    public static FileShadow Empty() => new([], 0);

    public static FileShadow Of(byte[] data) => new(data, data.Length);

    /// <summary>Bytes held (the capacity), for the recorder's memory budget.</summary>
    public long Footprint => _data.Length;

    public void Write(long offset, ReadOnlySpan<byte> bytes)
    {
        var end = offset + bytes.Length;
        Reserve(end);
        if (offset > Size)
        {
            _data.AsSpan((int)Size, (int)(offset - Size)).Clear(); // a hole reads as zeros
        }

        bytes.CopyTo(_data.AsSpan((int)offset));
        Size = Math.Max(Size, end);
        _cleanUpTo = Math.Min(_cleanUpTo, offset);
    }

    public void Truncate(long size)
    {
        _cleanUpTo = Math.Min(_cleanUpTo, size);
        if (size > Size)
        {
            Reserve(size);
            _data.AsSpan((int)Size, (int)(size - Size)).Clear();
        }

        Size = size;
    }

    /// <summary>
    /// Stores the bytes (chunked like a file read, so identical content shares blobs) and returns the content.
    /// Chunks of the previous store that lie wholly in the unchanged prefix are kept without being cut or hashed
    /// again, except the last one: it may have ended only because the data did (a cut point found by the hash,
    /// or at the maximum size, depends on nothing after it; an end-of-data cut does). The result is the same as
    /// storing the bytes from scratch.
    /// </summary>
    public IngestedContent Store(TraceWriter writer)
    {
        var storedBefore = writer.StoredBytesWritten;
        var keep = 0;
        // A chunk followed by a hole ended because its data did, like the last one: kept only when the next chunk
        // starts where it ends.
        while (keep < _chunks.Count - 1 && End(_chunks[keep].Extent) <= _cleanUpTo && _chunks[keep + 1].Extent.Offset == End(_chunks[keep].Extent))
        {
            keep++;
        }

        _chunks.RemoveRange(keep, _chunks.Count - keep);
        var data = _data.AsSpan(0, (int)Size);
        var pos = keep == 0 ? 0 : End(_chunks[^1].Extent);
        while (pos < Size)
        {
            // Whole aligned blocks of zeros are stored as a hole: the shadow cannot tell a hole (a sparse write, a
            // truncate up, a write past the end) from written zeros, and the content is the same either way; the
            // export then allocates what the file did, not its whole size.
            if (pos % HoleBlock == 0)
            {
                while (pos < Size && IsZeroBlock(data, pos))
                {
                    pos += HoleBlock;
                }

                if (pos >= Size)
                {
                    break;
                }
            }

            // The data runs to the first aligned block of zeros after pos (or the end).
            var end = (pos + HoleBlock - 1) / HoleBlock * HoleBlock;
            while (end < Size && !IsZeroBlock(data, end))
            {
                end += HoleBlock;
            }

            end = Math.Min(end, Size);
            var cut = FastCdc.NextCut(data[(int)pos..(int)end]);
            var rowId = writer.PutBlob(data.Slice((int)pos, cut), out var id);
            _chunks.Add((new Extent(pos, cut, rowId), id));
            pos += cut;
        }

        _cleanUpTo = Size;
        var extents = new List<Extent>(_chunks.Count);
        var hashed = new List<(long, int, BlobId)>(_chunks.Count);
        foreach (var (extent, id) in _chunks)
        {
            extents.Add(extent);
            hashed.Add((extent.Offset, extent.Length, id));
        }

        return new IngestedContent(ExtentMap.Encode(extents), ExtentMap.ContentId(hashed, Size), Size, writer.StoredBytesWritten - storedBefore);
    }

    private const int HoleBlock = 4096;

    private static long End(Extent e) => e.Offset + e.Length;

    // An aligned block of zeros (the last one may be short: a truncate up leaves it unallocated too).
    private static bool IsZeroBlock(ReadOnlySpan<byte> data, long at) =>
        !data.Slice((int)at, (int)Math.Min(HoleBlock, data.Length - at)).ContainsAnyExcept((byte)0);

    private void Reserve(long size)
    {
        if (size > Array.MaxLength)
        {
            throw new InvalidOperationException($"a shadow of {size} bytes is too big");
        }

        if (size > _data.Length)
        {
            Array.Resize(ref _data, (int)Math.Min(Array.MaxLength, Math.Max(size, Math.Min(2L * _data.Length, size + (64 << 20)))));
        }
    }
}
