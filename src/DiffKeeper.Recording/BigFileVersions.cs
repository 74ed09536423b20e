using DiffKeeper.Core;
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

    private readonly Dictionary<(int Root, string Rel), (byte[] ContentId, long Size, IReadOnlyList<BlockPiece> Pieces)> _last = new(PathKeyComparer.Instance);

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
            _fromWrites.Remove((root, rel));
            LastFromWrites = false;
            return null;
        }

        LastFromWrites = false;
        if (Witness is { } witness)
        {
            if (RefreshWitness is { } refresh && FromWrites(writer, file, size, root, rel, newestContentId, witness, refresh) is { } content)
            {
                return content;
            }

            witness.ReadNow(file);
            _written[(root, rel)] = []; // only a witness can use the written ranges
            _fromWrites.Remove((root, rel));
        }

        return Ingest(writer, new FileBlockSource(file), size, root, rel, newestContentId);
    }

    /// <summary>
    /// `record` with eBPF: the version of a big file from the blocks its write events touched since its last version,
    /// read from the live file while the command runs; null when the witness does not vouch for it (before the read,
    /// or after it: then the caller reads it whole at once).
    /// </summary>
    /// <remarks>
    /// Why such a version is never worse than a whole read made at the same moment. A whole read while the command
    /// runs is not a state at one instant either: it holds every write made before it, and any later write that
    /// lands before the read passes its block. This version holds, for each block a handled write event touched, the
    /// block as it is now (the same as a whole read), and for every other block the previous version's bytes. A
    /// block no handled event touched was changed since the previous version only by (1) a write of the tree whose
    /// event is not handled yet: its event comes later, marks the file again and puts the block into the next
    /// version's read, so this version lacks only a change from after its own event (a whole read may or may not hold
    /// it), and the last version holds it; (2) a write no event shows: another process (its fanotify event, queued
    /// when it wrote, taints the file at the <see cref="RefreshWitness"/> after this read, and the file is read whole
    /// at once), a shared writable mapping, io_uring or AIO of the tree (the kernel's count, read at the same
    /// refresh, then stops all vouching), or a process outside the tree that held it open or mapped since before the
    /// watch (the /proc scan after the file's first read keeps it unvouched until one finds none). So a version from
    /// written blocks lacks only what a whole read could equally have missed. Events lost from a full ring buffer are
    /// a loss: the rescan that follows reads every file versioned from its writes (as one from a followed copy)
    /// whatever its stat. And the last version of each file is exact: after the command ends and every event is
    /// handled, the recorder refreshes the witness once more and reads whole every file whose newest version came
    /// from written blocks and which is no longer vouched for (<see cref="NotVouchedFromWrites"/>), before the
    /// reconcile scan.
    /// </remarks>
    private IngestedContent? FromWrites(TraceWriter writer, SafeFileHandle file, long size, int root, string rel, byte[]? newestContentId,
        DiffKeeper.Capture.Fanotify.WriteWitness witness, Action refresh)
    {
        var key = (root, rel);
        if (_written.GetValueOrDefault(key) is not { } written || LastIfNewest(root, rel, newestContentId) is not { } last)
        {
            return null;
        }

        refresh();
        if (!witness.Vouches(file))
        {
            return null;
        }

        witness.ReadNow(file);
        _written[key] = [];
        var result = BlockIngest.Ingest(writer, new FileBlockSource(file), size, last.Pieces, last.Size, written);
        BytesRead += result.BytesRead;
        refresh(); // a write no event shows may have landed before the read: then it is read whole now
        if (!witness.Vouches(file))
        {
            witness.ReadNow(file);
            return null;
        }

        _last[key] = (result.Content.ContentId, result.Content.Size, result.Pieces);
        _fromWrites.Add(key);
        VersionsFromWrites++;
        LastFromWrites = true;
        return result.Content;
    }

    /// <summary>
    /// `record` only: called before and after a big file is read from its written blocks, to take in what the witness
    /// learned since (fanotify events, the kernel's count of unseen writers); null: keep mode, whose cuts refresh it.
    /// </summary>
    public Action? RefreshWitness { get; set; }

    /// <summary>Whether the last <see cref="TryIngest"/> read only written blocks (a loss must make its file be read again).</summary>
    public bool LastFromWrites { get; private set; }

    // Paths whose newest version `record` made from written blocks (see NotVouchedFromWrites).
    private readonly HashSet<(int Root, string Rel)> _fromWrites = new(PathKeyComparer.Instance);

    /// <summary>
    /// The paths whose newest version came from written blocks (<see cref="TryIngest"/>) that the witness no longer
    /// vouches for (<paramref name="vouches"/> opens the path and asks it; false when it cannot): their last version
    /// must be a whole read. Call it after the last refresh.
    /// </summary>
    public List<(int Root, string Rel)> NotVouchedFromWrites(Func<int, string, bool> vouches) =>
        [.. _fromWrites.Where(k => !vouches(k.Root, k.Rel))];

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
    /// Says whether the write events of the recorded tree are all the changes of a file (eBPF: keep mode at its cuts,
    /// `record` around each read through <see cref="RefreshWitness"/>); null: every version reads the file's data
    /// extents whole.
    /// </summary>
    public DiffKeeper.Capture.Fanotify.WriteWitness? Witness { get; set; }

    /// <summary>Versions of big files made from their written blocks alone (<see cref="TryFreeze"/>, <see cref="TryIngest"/>).</summary>
    public long VersionsFromWrites { get; private set; }

    // Per path: every range written since its last read (by write events), while every event since was a write.
    private readonly Dictionary<(int Root, string Rel), List<(long Start, long End)>> _written = new(PathKeyComparer.Instance);

    /// <summary>A write event's range: <paramref name="length"/> bytes at <paramref name="offset"/> of the path.</summary>
    public void NoteWrite(int root, string rel, long offset, long length)
    {
        if (_written.Count != 0 && _written.TryGetValue((root, rel), out var ranges)) // no lookup per write while no big file is followed
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
