using System.Buffers;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Replay;

/// <summary>
/// Decodes a file version's bytes extent by extent, checking each blob (CRC, SHA-256) and the version's content
/// id. Any damage becomes a one-line <see cref="DiffKeeperException"/> (exit code 5) naming the path.
/// </summary>
public static class VersionContent
{
    /// <summary>Calls <paramref name="sink"/> with each extent's bytes and file offset, in order.</summary>
    public static void Read(TraceReader reader, SessionInfo session, VersionRecord version, Action<ReadOnlyMemory<byte>, long> sink)
    {
        var display = TraceReader.DisplayPath(session, version.RootId, version.Rel);
        if (version.Kind != EntryKind.File)
        {
            return;
        }

        if (version.Pruned)
        {
            throw new DiffKeeperException(ExitCode.NotFound,
                $"{display} at event #{version.Seq} of session {version.SessionId} was pruned from the trace ('diffkeeper log' shows which versions remain); choose a later moment")
            { Path = display };
        }

        if (version.Extents is null || version.ContentId is null ||
            !ExtentMap.TryDecode(version.Extents, version.Size, out var extents))
        {
            throw Damaged(display, version, "its extent map is malformed");
        }

        var hashed = new List<(long, int, BlobId)>(extents.Count);
        var buffer = ArrayPool<byte>.Shared.Rent(PackFormat.MaxRawLength);
        try
        {
            foreach (var extent in extents)
            {
                BlobLocation loc;
                try
                {
                    loc = reader.Blob(extent.BlobRowId);
                }
                catch (BlobMissingException)
                {
                    throw Damaged(display, version, $"it references blob row {extent.BlobRowId}, which the catalog lacks");
                }

                if (loc.RawLength != extent.Length || loc.RawLength > PackFormat.MaxRawLength)
                {
                    throw Damaged(display, version, $"blob {loc.Id.Short} has {loc.RawLength} bytes where the extent map expects {extent.Length}");
                }

                try
                {
                    reader.Blobs.Read(loc, buffer.AsSpan(0, loc.RawLength));
                }
                catch (BlobDamagedException e)
                {
                    throw Damaged(display, version, e.Message);
                }

                hashed.Add((extent.Offset, extent.Length, loc.Id));
                sink(buffer.AsMemory(0, loc.RawLength), extent.Offset);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        if (!ExtentMap.ContentId(hashed, version.Size).AsSpan().SequenceEqual(version.ContentId))
        {
            throw Damaged(display, version, "its extents do not hash to its content id");
        }
    }

    private static DiffKeeperException Damaged(string path, VersionRecord v, string why) =>
        new(ExitCode.Corrupt, $"{path} (session {v.SessionId}, version {v.Id}, event #{v.Seq}) is damaged in the trace: {why}; run 'diffkeeper verify' for the full list")
        { Path = path };
}
