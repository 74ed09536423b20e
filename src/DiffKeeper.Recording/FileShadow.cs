using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using DiffKeeper.Native;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Chunking;

namespace DiffKeeper.Recording;

/// <summary>
/// The recorder's own copy of a file's bytes, kept while a capture backend delivers exact changes (write payloads,
/// truncates): each change is applied here and a version is stored from these bytes, without reading the file, so
/// the version is the state right after that change even when the file has changed again (or is gone) since.
/// </summary>
internal sealed unsafe class FileShadow
{
    // From NativeFrom bytes on, the bytes live in native memory (CopyHeap: power-of-two blocks in huge pages, moved
    // to a larger block to grow, given back when the copy is collected). As arrays on the GC heap, an untar's ~130 MB
    // of copies (tar writes 10 KiB at a time, so each grew by doubling) were most of the recorder's allocations: every
    // collection copied the survivors (every copy survives), every new page was a fault (a trap on this VM), and each
    // growth copied the old array; glibc's malloc after that still faulted every new heap page in alone (~40,000
    // faults an untar). Below it (20,000 files of 100 B), an array: one allocation from the GC's context, and no
    // finalizable object per file.
    private const int NativeFrom = 4096;
    private byte[] _array = [];
    private NativeBuffer? _native;

    // The chunks of the last Store, and how far the bytes are unchanged since: a file written by appends (tar,
    // a log) is stored after every write, and re-cutting and re-hashing all of it each time made that quadratic.
    private CompactList<(Extent Extent, BlobId Id)> _chunks; // most files are one chunk: held in place, no list
    private long _cleanUpTo;

    // The hash state of the last chunk stored, when it ended where the data did: the next Store of a file growing by
    // appends continues it over the new bytes (valid while its bytes are below _cleanUpTo). Boxed, and kept only by
    // copies in native memory (4 KiB and more): 128 bytes held in every followed copy made a small one about twice
    // as big, and a version of an array copy (below 4 KiB) hashes its bytes whole.
    private StrongBox<GrowingTail>? _tail;

    // What the last Store returned, while nothing has changed since (null after any change): a version that changes
    // no byte (tar's chmod after it wrote a file, one a version for each of a file's ~8,000 names) takes it instead of
    // cutting, hashing and looking up its last chunk again (for a small file, all of it: ~80 MB hashed an untar).
    private IngestedContent? _unchanged;

    // The ranges that hold data (written, or data when the copy was seeded from the file), sorted, disjoint and not
    // touching: the rest is a hole. Zeros a program wrote are data; a sparse write, a truncate up or a punched hole
    // leave a hole, so the export allocates what the file did.
    private CompactList<(long Start, long End)> _ranges;

    private FileShadow(ReadOnlySpan<byte> data)
    {
        if (data.Length > 0)
        {
            Reserve(data.Length);
            data.CopyTo(Bytes(0, data.Length));
        }

        Size = data.Length;
    }

    public long Size { get; private set; }

    /// <summary>
    /// The device and inode of the file this copy follows, when known (from the backend, or the stat of the read that
    /// seeded it): its versions name that file, not whatever the path holds when they are stored.
    /// </summary>
    public (ulong Device, ulong Inode)? FileId { get; set; }

    /// <summary>The file's permission bits as the backend reported them (created with, or changed to); null: unknown, take the file's.</summary>
    public int? Mode { get; set; }

    /// <summary>A copy of a file the backend saw made empty: its bytes hold no change whose event is still to come.</summary>
    public static FileShadow Empty() => new([]) { ReadHorizon = long.MinValue };

    /// <summary>
    /// Until when (Stopwatch time) these bytes may hold changes of the file whose events are still to come: the end
    /// of the read that seeded the copy (a change made before then may show in it before its event is applied);
    /// long.MinValue for a copy made empty by an event and changed by events alone; long.MaxValue when not known.
    /// A copy whose horizon is before an event is the file as of that event (every change before it applied).
    /// </summary>
    public long ReadHorizon { get; private init; } = long.MaxValue;

    /// <summary>The content the last <see cref="Store"/> returned, while no change has come since; null otherwise.</summary>
    public IngestedContent? StoredContent => _unchanged;

    /// <summary>The owner's count of commits when this copy last changed or was made (see <see cref="Versioner.AfterCommit"/>).</summary>
    public long ChangedInCommit { get; set; }

    /// <summary>Gives the native bytes back now, not when the copy is collected; the copy must not be used after.</summary>
    public void Release()
    {
        _native?.Release();
        _native = null;
        _array = [];
        Size = 0;
        _unchanged = null;
    }

    /// <summary>
    /// A copy seeded from a read of the file (or a stored version): <paramref name="dataRanges"/> are its data extents
    /// (SEEK_DATA/SEEK_HOLE), the rest holes; <paramref name="readHorizon"/> as <see cref="ReadHorizon"/>.
    /// </summary>
    public static FileShadow Of(byte[] data, IEnumerable<(long Start, long End)> dataRanges, long readHorizon = long.MaxValue)
    {
        var shadow = new FileShadow(data) { ReadHorizon = readHorizon };
        foreach (var (start, end) in dataRanges)
        {
            shadow.AddRange(start, Math.Min(end, data.Length));
        }

        return shadow;
    }

    /// <summary>Bytes the last <see cref="Store"/> cut again (what it cost, unlike the file's size; a growing tail counts whole, though only its new bytes are hashed).</summary>
    public long LastStoreCost { get; private set; }

    /// <summary>Bytes held (the capacity), for the recorder's memory budget.</summary>
    public long Footprint => _native?.Capacity ?? _array.Length;

    private Span<byte> Bytes(long start, long length) =>
        _native is { } native ? new(native.Pointer + start, checked((int)length)) : _array.AsSpan((int)start, (int)length);

    /// <summary>The bytes at <paramref name="offset"/> (holes read as zeros); valid until the copy next changes.</summary>
    public ReadOnlySpan<byte> Read(long offset, int length) =>
        offset >= 0 && length >= 0 && offset + length <= Size ? Bytes(offset, length) : throw new ArgumentOutOfRangeException(nameof(length));

    public void Write(long offset, ReadOnlySpan<byte> bytes)
    {
        _unchanged = null;
        var end = offset + bytes.Length;
        Reserve(end);
        if (offset > Size)
        {
            Bytes(Size, offset - Size).Clear(); // a hole reads as zeros
        }

        bytes.CopyTo(Bytes(offset, bytes.Length));
        Size = Math.Max(Size, end);
        _cleanUpTo = Math.Min(_cleanUpTo, offset);
        AddRange(offset, end);
    }

    public void Truncate(long size)
    {
        _unchanged = null;
        _cleanUpTo = Math.Min(_cleanUpTo, size);
        if (size > Size)
        {
            Reserve(size);
            Bytes(Size, size - Size).Clear();
        }
        else
        {
            RemoveRange(size, long.MaxValue);
        }

        Size = size;
    }

    /// <summary>fallocate(PUNCH_HOLE | KEEP_SIZE): the bytes read as zeros and hold no data; the size stays.</summary>
    public void Punch(long offset, long length)
    {
        var end = Math.Min(Size, offset + length);
        if (offset >= end)
        {
            return;
        }

        Bytes(offset, end - offset).Clear();
        _unchanged = null;
        _cleanUpTo = Math.Min(_cleanUpTo, offset);
        RemoveRange(offset, end);
    }

    private void AddRange(long start, long end)
    {
        if (start >= end)
        {
            return;
        }

        // Appends (the common case) add or extend the last range, without the search below (its predicate was an
        // allocation per write).
        if (_ranges.Count == 0 || _ranges[^1].End < start)
        {
            _ranges.Add((start, end));
            return;
        }

        if (_ranges[^1].Start <= start)
        {
            _ranges[^1] = (_ranges[^1].Start, Math.Max(end, _ranges[^1].End));
            return;
        }

        var first = 0;
        while (_ranges[first].End < start)
        {
            first++;
        }

        var last = first;
        while (last + 1 < _ranges.Count && _ranges[last + 1].Start <= end)
        {
            last++;
        }

        if (_ranges[first].Start > end)
        {
            _ranges.Insert(first, (start, end));
            return;
        }

        var merged = (Math.Min(start, _ranges[first].Start), Math.Max(end, _ranges[last].End));
        _ranges.RemoveRange(first, last - first + 1);
        _ranges.Insert(first, merged);
    }

    private void RemoveRange(long start, long end)
    {
        for (var i = _ranges.Count - 1; i >= 0; i--)
        {
            var (s, e) = _ranges[i];
            if (e <= start || s >= end)
            {
                continue;
            }

            _ranges.RemoveAt(i);
            if (e > end)
            {
                _ranges.Insert(i, (end, e));
            }

            if (s < start)
            {
                _ranges.Insert(i, (s, start));
            }
        }
    }

    /// <summary>
    /// Stores the bytes (chunked like a file read, so identical content shares blobs) and returns the content.
    /// Chunks of the previous store that lie wholly in the unchanged prefix are kept without being cut or hashed
    /// again, except the last one: it may have ended only because the data did (a cut point found by the hash,
    /// or at the maximum size, depends on nothing after it; an end-of-data cut does). The result is the same as
    /// storing the bytes from scratch.
    /// </summary>
    /// <param name="scratch">A content of <paramref name="writer"/> to build the state in (emptied first, see
    /// <see cref="ChunkedContent.Restart"/>), which the caller keeps for the next store; null: a new one.</param>
    public IngestedContent Store(TraceWriter writer, ChunkedContent? scratch = null)
    {
        if (_unchanged is { } same)
        {
            // Nothing changed since the last Store: its content again, with nothing new stored, and the cost a store
            // of the same bytes reports (the exact-version budget counts the bytes it would have cut again).
            LastStoreCost = RecutBytes();
            return same;
        }

        _unchanged = Stored(StoreChanged(writer, scratch));
        return _unchanged;
    }

    // A content returned again stored no new bytes.
    private static IngestedContent Stored(IngestedContent content) => content.StoredBytes == 0 ? content : content with { StoredBytes = 0 };

    // Whether the bytes are stored as one chunk from 0 (all data, less than the least chunk; see StoreChanged).
    private bool IsOneSmallChunk => Size < FastCdc.MinSize && _ranges.Count == 1 && _ranges[0].Start == 0 && _ranges[0].End >= Size;

    // The chunks of the last Store kept by the next one (the rest is cut again): those wholly below _cleanUpTo that
    // another chunk follows without a gap. A chunk followed by a hole ended because its data did, like the last one.
    private int KeptChunks()
    {
        var keep = 0;
        while (keep < _chunks.Count - 1 && End(_chunks[keep].Extent) <= _cleanUpTo && _chunks[keep + 1].Extent.Offset == End(_chunks[keep].Extent))
        {
            keep++;
        }

        return keep;
    }

    // The bytes a Store of unchanged bytes cuts again: what StoreChanged's LastStoreCost is for them.
    private long RecutBytes()
    {
        if (Size == 0)
        {
            return 0;
        }

        if (IsOneSmallChunk)
        {
            return Size;
        }

        var keep = KeptChunks();
        var end = keep == 0 ? 0 : End(_chunks[keep - 1].Extent);
        long cost = 0;
        for (var r = 0; r < _ranges.Count; r++)
        {
            var (start, rangeEnd) = _ranges[r];
            var stop = Math.Min(rangeEnd, Size);
            var from = Math.Max(end, start);
            if (from < stop)
            {
                cost += stop - from;
                end = stop;
            }
        }

        return cost;
    }

    private IngestedContent StoreChanged(TraceWriter writer, ChunkedContent? scratch)
    {
        if (Size == 0)
        {
            // A file just created (every new file's first version): the empty content, made once.
            LastStoreCost = 0;
            _cleanUpTo = 0;
            _chunks.Clear();
            _tail = null;
            return EmptyContent;
        }

        if (IsOneSmallChunk)
        {
            // All data, less than the least chunk: one chunk from 0 (no chunk of the last store lies wholly below
            // _cleanUpTo with another after it: that one would be at least the least chunk long). What the general
            // path below gives, without its lists (20,000 small files: two versions each, all of them here). A copy
            // in native memory (4 KiB and more) keeps the hash state, so its next state, of a file still growing,
            // hashes only the new bytes; an array keeps none (128 bytes would make a 100-byte file's copy twice as big).
            var small = _tail is { } held && held.Value.HashedTo <= _cleanUpTo ? held.Value : GrowingTail.None;
            var stored1 = ChunkedContent.StoreWhole(writer, Bytes(0, Size), (int)Size, ref small, out var chunk);
            if (_native is null)
            {
                _tail = null;
            }
            else
            {
                _tail ??= new StrongBox<GrowingTail>();
                _tail.Value = small;
            }

            LastStoreCost = Size;
            _cleanUpTo = Size;
            _chunks.Clear();
            _chunks.Add(chunk);
            return stored1;
        }

        var keep = KeptChunks();
        var content = scratch ?? new ChunkedContent(writer);
        content.Restart();
        for (var i = 0; i < keep; i++)
        {
            var (extent, id) = _chunks[i];
            content.Add(extent.Offset, extent.Length, extent.BlobRowId, id);
        }

        long cost = 0;
        var memory = _native is { } n ? n.Memory[..(int)Size] : _array.AsMemory(0, (int)Size);
        var box = _tail;
        _tail = null;
        var tail = box is not null && box.Value.HashedTo <= _cleanUpTo ? box.Value : GrowingTail.None;
        var grown = false;
        // Each data range is chunked on its own, as a read chunks each data extent; the gaps are holes.
        for (var r = 0; r < _ranges.Count; r++)
        {
            var (start, rangeEnd) = _ranges[r];
            var end = Math.Min(rangeEnd, Size);
            var from = Math.Max(content.End, start);
            if (from < end)
            {
                cost += content.StoreRange(memory, (int)from, (int)end, ref tail);
                grown = true;
            }
        }

        if (grown)
        {
            box ??= new StrongBox<GrowingTail>();
            box.Value = tail;
            _tail = box;
        }

        LastStoreCost = cost;
        _cleanUpTo = Size;
        var stored = content.Finish(Size);
        _chunks.Clear();
        var chunks = content.Chunks;
        for (var i = 0; i < chunks.Count; i++)
        {
            _chunks.Add(chunks[i]); // by index: the list's enumerator through the interface was an object a store
        }

        return stored;
    }

    private static long End(Extent e) => e.Offset + e.Length;

    // Shared by every empty version: nothing reads its arrays to change them.
    private static readonly IngestedContent EmptyContent = new(ExtentMap.Encode([]), ExtentMap.ContentId([], 0), 0, 0);

    private void Reserve(long size)
    {
        if (size > Array.MaxLength)
        {
            throw new InvalidOperationException($"a shadow of {size} bytes is too big");
        }

        if (size > Footprint)
        {
            // Uninitialized: nothing reads past Size, and every way of growing Size (a write past the end, a truncate
            // up) clears the gap it opens.
            var capacity = Math.Min(Array.MaxLength, Math.Max(size, Math.Min(2L * Footprint, size + (64 << 20))));
            if (_native is { } native)
            {
                native.Grow(capacity, Size);
            }
            else if (capacity >= NativeFrom)
            {
                _native = new NativeBuffer(capacity);
                _array.AsSpan(0, (int)Size).CopyTo(new Span<byte>(_native.Pointer, (int)Size));
                _array = [];
            }
            else
            {
                var grown = GC.AllocateUninitializedArray<byte>((int)capacity);
                _array.AsSpan(0, (int)Size).CopyTo(grown);
                _array = grown;
            }
        }
    }
}

/// <summary>Bytes in native memory (<see cref="CopyHeap"/>), grown by moving to a larger block, given back when the buffer is collected.</summary>
internal sealed unsafe class NativeBuffer
{
    public NativeBuffer(long capacity)
    {
        Pointer = CopyHeap.Shared.Allocate(capacity, out var given);
        Capacity = given;
    }

    ~NativeBuffer()
    {
        if (Pointer != null) // null when the constructor's allocation failed (out of memory): nothing to give back
        {
            CopyHeap.Shared.Free(Pointer, Capacity);
        }
    }

    public byte* Pointer { get; private set; }

    // The bytes as Memory, made once per block (a store sliced a new one for every state of a growing file).
    private NativeMemoryManager? _memory;

    /// <summary>
    /// The whole capacity as <see cref="Memory{T}"/> (at most int.MaxValue bytes: a block of 2 GiB is one byte more, and
    /// no copy is that large), valid until the buffer grows or is released; this buffer keeps the bytes.
    /// </summary>
    public Memory<byte> Memory => (_memory ??= new NativeMemoryManager(Pointer, (int)Math.Min(Capacity, int.MaxValue))).Memory;

    /// <summary>Gives the bytes back to the heap now; the buffer holds none after.</summary>
    public void Release()
    {
        if (Pointer != null)
        {
            CopyHeap.Shared.Free(Pointer, Capacity);
            Pointer = null;
            Capacity = 0;
            _memory = null;
            GC.SuppressFinalize(this);
        }
    }

    public long Capacity { get; private set; }

    /// <summary>Grows to at least <paramref name="capacity"/> bytes, keeping the first <paramref name="used"/> (the pointer may change).</summary>
    public void Grow(long capacity, long used)
    {
        if (capacity <= Capacity)
        {
            return;
        }

        var grown = CopyHeap.Shared.Allocate(capacity, out var given);
        Buffer.MemoryCopy(Pointer, grown, given, used);
        CopyHeap.Shared.Free(Pointer, Capacity);
        Pointer = grown;
        Capacity = given;
        _memory = null;
    }
}
