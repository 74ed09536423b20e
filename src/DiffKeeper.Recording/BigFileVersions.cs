using DiffKeeper.Storage;
using DiffKeeper.Storage.BigFiles;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Recording;

/// <summary>
/// The recorder's and the keep agent's path for files of at least <see cref="Threshold"/> bytes (`--big-file`):
/// block extent maps instead of FastCDC chunks (docs/store-format.md, "Big files"), so a version of a 1 GiB image
/// costs its data extents' hashes and its changed blocks, never a read of its holes or a chunking pass. The block map
/// of each path's last version is kept here, so unchanged blocks are recognised without a catalog lookup; it is
/// used only while it is still the path's newest stored content (retention never removes a newest version's
/// blobs, so the rows it names exist).
/// </summary>
public sealed class BigFileVersions(long threshold)
{
    public const long DefaultThreshold = 64L << 20;

    private readonly Dictionary<(int Root, string Rel), (byte[] ContentId, long Size, IReadOnlyList<BlockPiece> Pieces)> _last = [];

    public long Threshold { get; } = threshold;

    /// <summary>Bytes read by big-file versions (data extents only).</summary>
    public long BytesRead { get; private set; }

    /// <summary>
    /// Stores the file as a block map when it is big enough, else returns null (the caller chunks it).
    /// <paramref name="newestContentId"/> is the content id of the path's newest stored version, if any.
    /// </summary>
    public IngestedContent? TryIngest(TraceWriter writer, SafeFileHandle file, long size, int root, string rel, byte[]? newestContentId)
    {
        if (size < Threshold)
        {
            _last.Remove((root, rel));
            _written.Remove((root, rel));
            return null;
        }

        if (Witness is { } witness)
        {
            witness.ReadNow(file);
            _written[(root, rel)] = []; // only a witness can use the written ranges
        }

        return Ingest(writer, new FileBlockSource(file), size, root, rel, newestContentId);
    }

    /// <summary>
    /// Copies the data extents of a big file into memory (see <see cref="FrozenImage"/>), for
    /// <see cref="IngestImage"/> to store later; null when the file is below the threshold (the caller reads it as
    /// any file) or the images of this cut would exceed <see cref="ImageBudget"/> (the caller stores it now).
    /// </summary>
    /// <remarks>
    /// When <see cref="Witness"/> vouches that the path's write events since its last version are all its changes,
    /// and that version is still the newest, only the blocks those writes touched are copied (the rest of the new
    /// version is the last one's pieces): the freeze then costs the writes, not the file.
    /// </remarks>
    public FrozenImage? TryFreeze(SafeFileHandle file, long size, int root, string rel, byte[]? newestContentId)
    {
        if (size < Threshold)
        {
            return null;
        }

        var written = _written.GetValueOrDefault((root, rel));
        var exact = written is not null && Witness?.Vouches(file) == true && LastIfNewest(root, rel, newestContentId) is not null;
        if (Witness is { } witness)
        {
            witness.ReadNow(file);
            _written[(root, rel)] = [];
        }

        if (exact)
        {
            var image = FrozenImage.TakeWritten(file, size, written!, _last[(root, rel)].Size, _images);
            if (image is not null)
            {
                VersionsFromWrites++;
            }

            return image;
        }

        return FrozenImage.Take(file, size, _images);
    }

    /// <summary>Stores an image taken by <see cref="TryFreeze"/> as the path's version, as <see cref="TryIngest"/> stores a file.</summary>
    public IngestedContent IngestImage(TraceWriter writer, FrozenImage image, int root, string rel, byte[]? newestContentId)
    {
        if (image.Written is not null && LastIfNewest(root, rel, newestContentId) is null)
        {
            throw new InvalidOperationException($"the image of {rel} holds written blocks only, and its previous version is no longer the newest");
        }

        return Ingest(writer, image, image.Size, root, rel, newestContentId, image.Written);
    }

    /// <summary>
    /// Says whether the write events of the recorded tree are all the changes of a file (keep mode with eBPF); null:
    /// every version reads the file's data extents whole.
    /// </summary>
    public DiffKeeper.Capture.Fanotify.WriteWitness? Witness { get; set; }

    /// <summary>Versions of big files copied from their written blocks alone (<see cref="TryFreeze"/>).</summary>
    public long VersionsFromWrites { get; private set; }

    // Per path: every range written since its last read (by write events), while every event since was a write.
    private readonly Dictionary<(int Root, string Rel), List<(long Start, long End)>> _written = [];

    /// <summary>A write event's range: <paramref name="length"/> bytes at <paramref name="offset"/> of the path.</summary>
    public void NoteWrite(int root, string rel, long offset, long length)
    {
        if (_written.TryGetValue((root, rel), out var ranges))
        {
            if (ranges.Count > 0 && ranges[^1].End == offset)
            {
                ranges[^1] = (ranges[^1].Start, offset + length); // sequential writes: one range
            }
            else
            {
                ranges.Add((offset, offset + length));
            }

            if (ranges.Count > 65536)
            {
                _written.Remove((root, rel)); // scattered beyond use: read it whole
            }
        }
    }

    /// <summary>Any other event about a path (or a directory above it): its next version reads it whole.</summary>
    public void ForgetWrites(int root, string rel)
    {
        if (_written.Count == 0)
        {
            return; // most events: no big file is being followed
        }

        if (rel.Length == 0)
        {
            _written.Clear();
            return;
        }

        foreach (var key in _written.Keys)
        {
            if (key.Root == root && Core.TracePath.IsAtOrBelow(key.Rel, rel))
            {
                _written.Remove(key); // removing while enumerating a Dictionary is allowed (no list per event)
            }
        }
    }

    /// <summary>Every path's next version reads it whole (events were lost, or a rescan).</summary>
    public void ForgetAllWrites() => _written.Clear();

    private (byte[] ContentId, long Size, IReadOnlyList<BlockPiece> Pieces)? LastIfNewest(int root, string rel, byte[]? newestContentId) =>
        _last.TryGetValue((root, rel), out var last) && newestContentId is not null && last.ContentId.AsSpan().SequenceEqual(newestContentId)
            ? last
            : null;

    /// <summary>Memory the images of one cut may hold at once.</summary>
    public const long ImageBudget = 512L << 20;

    private readonly ImageBuffers _images = new(ImageBudget);

    private IngestedContent Ingest(TraceWriter writer, IBlockSource file, long size, int root, string rel, byte[]? newestContentId,
        IReadOnlyList<(long Start, long End)>? written = null)
    {
        var last = LastIfNewest(root, rel, newestContentId);
        var result = BlockIngest.Ingest(writer, file, size, last?.Pieces, last?.Size ?? 0, written);
        BytesRead += result.BytesRead;
        _last[(root, rel)] = (result.Content.ContentId, result.Content.Size, result.Pieces);
        return result.Content;
    }
}
