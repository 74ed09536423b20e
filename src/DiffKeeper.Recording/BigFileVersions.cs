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
            return null;
        }

        return Ingest(writer, new FileBlockSource(file), size, root, rel, newestContentId);
    }

    /// <summary>
    /// Copies the data extents of a big file into memory (see <see cref="FrozenImage"/>), for
    /// <see cref="IngestImage"/> to store later; null when the file is below the threshold (the caller reads it as
    /// any file) or the images of this cut would exceed <see cref="ImageBudget"/> (the caller stores it now).
    /// </summary>
    public FrozenImage? TryFreeze(SafeFileHandle file, long size) =>
        size < Threshold ? null : FrozenImage.Take(file, size, _images);

    /// <summary>Stores an image taken by <see cref="TryFreeze"/> as the path's version, as <see cref="TryIngest"/> stores a file.</summary>
    public IngestedContent IngestImage(TraceWriter writer, FrozenImage image, int root, string rel, byte[]? newestContentId) =>
        Ingest(writer, image, image.Size, root, rel, newestContentId);

    /// <summary>Memory the images of one cut may hold at once.</summary>
    public const long ImageBudget = 512L << 20;

    private readonly ImageBuffers _images = new(ImageBudget);

    private IngestedContent Ingest(TraceWriter writer, IBlockSource file, long size, int root, string rel, byte[]? newestContentId)
    {
        var previous = _last.TryGetValue((root, rel), out var last) && newestContentId is not null && last.ContentId.AsSpan().SequenceEqual(newestContentId)
            ? last.Pieces
            : null;
        var result = BlockIngest.Ingest(writer, file, size, previous, last.Size);
        BytesRead += result.BytesRead;
        _last[(root, rel)] = (result.Content.ContentId, result.Content.Size, result.Pieces);
        return result.Content;
    }
}
