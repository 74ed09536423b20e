using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// Reads back, during a recording, the bytes of a file version already committed to the trace: the recorder seeds
/// its followed copy of a file from the version it stored (the state the file had at that event) rather than from
/// the file, which by the time the recorder handles a write may be renamed, deleted or written again. Opens a reader
/// of the trace on first use (a second, read-only catalog connection: it sees committed rows only) and holds the
/// readers' lock until disposed, so dispose it before anything collects packs.
/// </summary>
public sealed class StoredContent(string traceDir) : IDisposable
{
    private TraceReader? _reader;
    private bool _unavailable;

    /// <summary>
    /// Keep the reader (and the readers' lock) open between reads (default). False under a size limit: the ring's
    /// collection deletes the pack files it emptied only while no reader is open.
    /// </summary>
    public bool HoldReader { get; init; } = true;

    /// <summary>
    /// False once a read failed for another reason than a version not committed yet (a damaged blob, an I/O or
    /// catalog error): every later read then returns null, so a copy given back could not be made again.
    /// </summary>
    public bool Available => !_unavailable;

    /// <summary>
    /// The bytes and data ranges (one per extent; gaps are holes) of a version stored with <paramref name="extentMap"/>, or null when they cannot be
    /// read back (not committed yet, damaged, larger than <paramref name="limit"/>): then read the file instead.
    /// </summary>
    public (byte[] Data, IEnumerable<(long Start, long End)> Ranges)? TryRead(byte[] extentMap, long size, long limit)
    {
        if (_unavailable || size > limit || size > Array.MaxLength || !ExtentMap.TryDecode(extentMap, size, out var extents))
        {
            return null;
        }

        try
        {
            _reader ??= TraceReader.Open(traceDir);
            var data = new byte[size];
            foreach (var e in extents)
            {
                _reader.Blobs.Read(_reader.Blob(e.BlobRowId), data.AsSpan(checked((int)e.Offset), e.Length));
            }

            return (data, extents.Select(e => (e.Offset, e.Offset + e.Length)));
        }
        catch (BlobMissingException)
        {
            return null; // stored in the transaction still open: not visible to this connection
        }
        catch (Exception e) when (e is DiffKeeperException or BlobDamagedException or IOException or CatalogException)
        {
            _unavailable = true; // the file is read instead, as before this existed
            return null;
        }
        finally
        {
            if (!HoldReader)
            {
                Dispose();
            }
        }
    }

    public void Dispose()
    {
        _reader?.Dispose();
        _reader = null;
    }
}
