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

    private FileShadow(byte[] data, long size)
    {
        _data = data;
        Size = size;
    }

    public long Size { get; private set; }

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
    }

    public void Truncate(long size)
    {
        if (size > Size)
        {
            Reserve(size);
            _data.AsSpan((int)Size, (int)(size - Size)).Clear();
        }

        Size = size;
    }

    /// <summary>Stores the bytes (chunked like a file read, so identical content shares blobs) and returns the content.</summary>
    public IngestedContent Store(TraceWriter writer)
    {
        var storedBefore = writer.StoredBytesWritten;
        var extents = new List<Extent>();
        var hashed = new List<(long, int, BlobId)>();
        var data = _data.AsSpan(0, (int)Size);
        long pos = 0;
        while (pos < Size)
        {
            var cut = FastCdc.NextCut(data[(int)pos..]);
            var rowId = writer.PutBlob(data.Slice((int)pos, cut), out var id);
            extents.Add(new Extent(pos, cut, rowId));
            hashed.Add((pos, cut, id));
            pos += cut;
        }

        return new IngestedContent(ExtentMap.Encode(extents), ExtentMap.ContentId(hashed, Size), Size, writer.StoredBytesWritten - storedBefore);
    }

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
