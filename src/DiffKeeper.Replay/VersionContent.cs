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
    /// <summary>
    /// The one-line error for a moment of a session whose file contents were dropped as a whole
    /// (<see cref="SessionInfo.ContentsNotKept"/>), exit code 12.
    /// </summary>
    public static DiffKeeperException NotKept(SessionInfo session) => new(ExitCode.ContentNotKept,
        $"session {session.Id}'s file contents were not kept: {session.ContentsNotKept}; its summary and timeline remain ('diffkeeper timeline --session {session.Id}')");

    /// <summary>
    /// Calls <paramref name="sink"/> with each extent's bytes and file offset. In order, from this thread, unless
    /// <paramref name="parallel"/>: then a version of whole blobs is decoded on every core and the sink is called
    /// concurrently, in any order (a positioned write is such a sink). Hashing each blob is most of the cost of a
    /// rebuild, which is why a restore spreads it.
    /// </summary>
    public static void Read(TraceReader reader, SessionInfo session, VersionRecord version, Action<ReadOnlyMemory<byte>, long> sink, bool parallel = false)
    {
        if (version.Kind != EntryKind.File)
        {
            return;
        }

        Read(reader, Prepare(reader, session, version), sink, parallel);
    }

    /// <summary>
    /// Everything <see cref="Read"/> checks before it decodes a byte, done ahead: the version's content is kept,
    /// its extent map is well formed, every blob row it names is in the catalog with the length the map gives,
    /// and the extents hash to its content id. Throws what <see cref="Read"/> would; <paramref name="version"/> must be a file.
    /// </summary>
    public static PreparedVersion Prepare(TraceReader reader, SessionInfo session, VersionRecord version)
    {
        var display = TraceReader.DisplayPath(session, version.RootId, version.Rel);

        // A session whose contents were not kept gives none, not even those its baseline inherits from a kept one
        // (format 5): "not kept" is about the session, whatever the catalog shares.
        if ((version.Pruned || version.Inherited) && session.ContentsNotKept is not null)
        {
            throw NotKept(session);
        }

        if (version.Pruned && session.ContentsDroppedBySizeLimit is { } limit)
        {
            throw new DiffKeeperException(ExitCode.ContentNotKept,
                $"{display} at event #{version.Seq} of session {version.SessionId}: its content was dropped to keep the trace under its size limit " +
                $"({limit}, oldest contents first); every event is still in the timeline; choose a later moment ('diffkeeper log' shows which versions remain)")
            { Path = display };
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

        // Memory stays bounded whatever the map claims: a map of more than KeptLocations extents (tens of GiB of
        // data) is looked up twice instead of holding every blob's location, and then decoded on this thread.
        var locations = extents.Count <= KeptLocations ? new BlobLocation[extents.Count] : null;
        byte[] contentId;
        if (extents.Count <= SmallMap)
        {
            // A few extents (most files): their records hashed in one call, without a ContentHasher and its 3 KiB
            // buffer (a thousand of them were a fifth of a small-file export's page faults).
            var records = new (long Offset, int Length, BlobId Id)[extents.Count];
            for (var i = 0; i < extents.Count; i++)
            {
                locations![i] = Locate(reader, display, version, extents[i]);
                records[i] = (extents[i].Offset, extents[i].Length, locations[i].Id);
            }

            contentId = ExtentMap.ContentId(records, version.Size);
        }
        else
        {
            var hashed = new ExtentMap.ContentHasher();
            for (var i = 0; i < extents.Count; i++)
            {
                var location = Locate(reader, display, version, extents[i]);
                if (locations is not null)
                {
                    locations[i] = location;
                }

                hashed.Add(extents[i].Offset, extents[i].Length, location.Id);
            }

            contentId = hashed.Finish(version.Size);
        }

        // The content id is checked before any byte is written: each blob read below is then checked against
        // the id the content id covers.
        if (!contentId.AsSpan().SequenceEqual(version.ContentId))
        {
            throw Damaged(display, version, "its extents do not hash to its content id");
        }

        return new PreparedVersion(display, version, extents, locations);
    }

    /// <summary><see cref="Read"/> of a version <see cref="Prepare"/> checked. Safe from any thread (blob rows are looked up under the blob reader's lock).</summary>
    /// <param name="held">The calling thread's buffer (a tree export's worker): slices of the group it holds are read
    /// from it rather than decoded again into the shared cache. Not used by the parallel path.</param>
    public static void Read(TraceReader reader, PreparedVersion prepared, Action<ReadOnlyMemory<byte>, long> sink, bool parallel = false,
        GroupBuffer? held = null)
    {
        var (version, extents, locations) = (prepared.Version, prepared.Extents, prepared.Locations);
        try
        {
            if (parallel && locations is not null && version.Size >= ParallelMinBytes && !locations.Any(l => l.IsDelta))
            {
                // Runs of adjacent extents up to 1 MiB: each core decodes a run into one buffer and hands it to
                // the sink whole. One write per run, not per blob: writes to one file take its inode lock, and
                // a core spinning on that lock hashes nothing. Slices (a big file's small pieces, in groups in file
                // order) come here too: the blob reader's cache holds their groups, and each core's share of the
                // file is mostly other groups.
                var runs = Runs(extents);
                System.Threading.Tasks.Parallel.For(0, runs.Count,
                    () => ArrayPool<byte>.Shared.Rent(RunBytes),
                    (r, _, buffer) =>
                    {
                        var (first, count) = runs[r];
                        var length = 0;
                        for (var i = first; i < first + count; i++)
                        {
                            reader.Blobs.Read(locations[i], buffer.AsSpan(length, extents[i].Length));
                            length += extents[i].Length;
                        }

                        sink(buffer.AsMemory(0, length), extents[first].Offset);
                        return buffer;
                    },
                    buffer => ArrayPool<byte>.Shared.Return(buffer));
                return;
            }

            var single = ArrayPool<byte>.Shared.Rent(PackFormat.MaxRawLength);
            try
            {
                for (var i = 0; i < extents.Count; i++)
                {
                    if (single.Length < extents[i].Length)
                    {
                        ArrayPool<byte>.Shared.Return(single);
                        single = ArrayPool<byte>.Shared.Rent(extents[i].Length);
                    }

                    reader.Blobs.Read(locations?[i] ?? Locate(reader, prepared.Display, version, extents[i]), single.AsSpan(0, extents[i].Length), held);
                    sink(single.AsMemory(0, extents[i].Length), extents[i].Offset);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(single);
            }
        }
        catch (BlobDamagedException e)
        {
            throw Damaged(prepared.Display, version, e.Message);
        }
        catch (AggregateException e) when (e.InnerExceptions.FirstOrDefault(x => x is BlobDamagedException) is BlobDamagedException d)
        {
            throw Damaged(prepared.Display, version, d.Message);
        }
    }

    /// <summary>
    /// One extent's bytes and its file offset: in a <see cref="GroupBuffer"/> (not <see cref="Rented"/>: valid until
    /// the buffer is pointed at another group) or in an array rented from <see cref="ArrayPool{T}.Shared"/>, which
    /// the receiver returns.
    /// </summary>
    public readonly record struct ExtentBytes(ReadOnlyMemory<byte> Bytes, long Offset, bool Rented);

    /// <summary>
    /// Decodes a prepared version in order on this thread into <paramref name="into"/>, extent by extent: the slices
    /// of the group <paramref name="held"/> holds are left where they lie in it (no copy), every other blob is
    /// decoded into a rented array. Returns the bytes rented. On failure nothing is added (what it rented is
    /// returned). For a worker that decodes the members of one group after another; thread-safe with one buffer per
    /// thread.
    /// </summary>
    public static long DecodeHeld(TraceReader reader, PreparedVersion prepared, GroupBuffer held, List<ExtentBytes> into)
    {
        var (version, extents, locations) = (prepared.Version, prepared.Extents, prepared.Locations);
        var first = into.Count;
        long rented = 0;
        try
        {
            for (var i = 0; i < extents.Count; i++)
            {
                var location = locations?[i] ?? Locate(reader, prepared.Display, version, extents[i]);
                if (held.Holds(location))
                {
                    into.Add(new ExtentBytes(reader.Blobs.ReadHeld(location, held), extents[i].Offset, false));
                    continue;
                }

                var bytes = ArrayPool<byte>.Shared.Rent(extents[i].Length);
                into.Add(new ExtentBytes(bytes.AsMemory(0, extents[i].Length), extents[i].Offset, true));
                rented += extents[i].Length;
                reader.Blobs.Read(location, bytes.AsSpan(0, extents[i].Length), held);
            }

            return rented;
        }
        catch (Exception e)
        {
            Release(into, first);
            if (e is BlobDamagedException d)
            {
                throw Damaged(prepared.Display, version, d.Message);
            }

            throw;
        }
    }

    /// <summary>Returns the rented arrays of <paramref name="extents"/> from <paramref name="from"/> on and removes those entries.</summary>
    public static void Release(List<ExtentBytes> extents, int from = 0)
    {
        for (var i = from; i < extents.Count; i++)
        {
            if (extents[i].Rented && System.Runtime.InteropServices.MemoryMarshal.TryGetArray(extents[i].Bytes, out var segment))
            {
                ArrayPool<byte>.Shared.Return(segment.Array!);
            }
        }

        extents.RemoveRange(from, extents.Count - from);
    }

    private const int SmallMap = 16;

    private const int KeptLocations = 1 << 19;

    private static BlobLocation Locate(TraceReader reader, string display, VersionRecord version, Extent extent)
    {
        BlobLocation location;
        try
        {
            location = reader.Blobs.Location(extent.BlobRowId);
        }
        catch (BlobMissingException)
        {
            throw Damaged(display, version, $"it references blob row {extent.BlobRowId}, which the catalog lacks");
        }

        if (location.RawLength != extent.Length)
        {
            throw Damaged(display, version, $"blob {location.Id.Short} has {location.RawLength} bytes where the extent map expects {extent.Length}");
        }

        return location;
    }

    /// <summary>A file version's bytes, holes as zeros, checked as <see cref="Read"/> checks them.</summary>
    public static byte[] ReadAll(TraceReader reader, SessionInfo session, VersionRecord version)
    {
        var bytes = new byte[version.Kind == EntryKind.File ? version.Size : 0];
        Read(reader, session, version, (data, offset) => data.Span.CopyTo(bytes.AsSpan((int)offset)));
        return bytes;
    }

    // Below this a version is decoded on the calling thread. Measured on the shared 2-core machine (export of one
    // 10 MiB file, side by side): handing runs to pool threads that then wait for a core cost more than hashing
    // half of 10 MiB on the second core saves; at 16 MiB and above (the 256 MiB restore) both cores pay off.
    private const long ParallelMinBytes = 16L << 20;

    private const int RunBytes = 1 << 20; // measured: 256 KiB-1 MiB alike, 4 MiB runs fall out of the cache and double the copy cost

    private static List<(int First, int Count)> Runs(IReadOnlyList<Extent> extents)
    {
        var runs = new List<(int, int)>();
        for (var i = 0; i < extents.Count;)
        {
            var first = i;
            long length = extents[i].Length;
            i++;
            while (i < extents.Count && extents[i].Offset == extents[i - 1].Offset + extents[i - 1].Length && length + extents[i].Length <= RunBytes)
            {
                length += extents[i].Length;
                i++;
            }

            runs.Add((first, i - first));
        }

        return runs;
    }

    private static DiffKeeperException Damaged(string path, VersionRecord v, string why) =>
        new(ExitCode.Corrupt, $"{path} (session {v.SessionId}, version {v.Id}, event #{v.Seq}) is damaged in the trace: {why}; run 'diffkeeper verify' for the full list")
        { Path = path };
}
