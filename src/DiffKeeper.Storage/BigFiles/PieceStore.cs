using System.Buffers;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// Stores the new pieces of a block ingest. A piece of at least <see cref="GroupBelow"/> bytes is a blob of its
/// own, as any chunk; smaller ones (the scattered pages of a sparse image: W5 stores 16,384 pieces of 4 KiB) are
/// written as slices of groups (docs/store-format.md, "Groups"), up to 1 MiB of them per record, so a page costs
/// its slice row and no 84-byte record of its own. A slice reads as a whole blob does (its group decoded up to
/// its end, at most 1 MiB, and kept in the reader's cache), so every version still rebuilds without a chain.
/// </summary>
internal static class PieceStore
{
    /// <summary>Pieces shorter than this are grouped: the record header (84 bytes) is over 0.5% of them.</summary>
    public const int GroupBelow = 16 << 10;

    /// <summary>
    /// Stores the pieces of <paramref name="buffer"/> that <paramref name="batch"/> names, already hashed into
    /// <paramref name="ids"/> (deduplicated by SHA-256, as <see cref="FileIngest"/> does); returns each one's row.
    /// </summary>
    public static List<(long RowId, BlobId Id, int Length)> Store(TraceWriter writer, byte[] buffer, List<(int Offset, int Length)> batch, BlobId[] ids)
    {
        var small = new List<int>();
        var seen = new HashSet<BlobId>();
        for (var i = 0; i < batch.Count; i++)
        {
            if (batch[i].Length < GroupBelow && seen.Add(ids[i]) && writer.Find(ids[i]) is null && !writer.HasDeltaRow(ids[i]))
            {
                small.Add(i);
            }
        }

        WriteGroups(writer, buffer, batch, ids, Cut(small, batch));

        // The grouped pieces are in the trace now: this finds them, and stores the others whole.
        return FileIngest.StoreBatch(writer, buffer, batch, ids, parallel: true);
    }

    /// <summary>The small pieces in runs of at most a group's length, in file order; runs of one piece are left whole.</summary>
    private static List<List<int>> Cut(List<int> small, List<(int Offset, int Length)> batch)
    {
        var groups = new List<List<int>>();
        var current = new List<int>();
        var length = 0;
        foreach (var i in small)
        {
            if (length + batch[i].Length > PackFormat.MaxGroupLength)
            {
                groups.Add(current);
                current = [];
                length = 0;
            }

            current.Add(i);
            length += batch[i].Length;
        }

        groups.Add(current);
        groups.RemoveAll(g => g.Count < 2);
        return groups;
    }

    private static void WriteGroups(TraceWriter writer, byte[] buffer, List<(int Offset, int Length)> batch, BlobId[] ids, List<List<int>> groups)
    {
        if (groups.Count == 0)
        {
            return;
        }

        var encoded = new (BlobId Id, int Raw, byte[] Payload, int Stored)[groups.Count];
        try
        {
            System.Threading.Tasks.Parallel.For(0, groups.Count, g =>
            {
                var raw = ArrayPool<byte>.Shared.Rent(PackFormat.MaxGroupLength);
                try
                {
                    var length = 0;
                    foreach (var i in groups[g])
                    {
                        buffer.AsSpan(batch[i].Offset, batch[i].Length).CopyTo(raw.AsSpan(length));
                        length += batch[i].Length;
                    }

                    var payload = ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(length));
                    encoded[g] = (BlobId.Of(raw.AsSpan(0, length)), length, payload, Zstd.Compress(raw.AsSpan(0, length), payload));
                }
                finally
                {
                    ArrayPool<byte>.Shared.Return(raw);
                }
            });

            for (var g = 0; g < groups.Count; g++)
            {
                var members = new List<(BlobId Id, int Start, int Length)>(groups[g].Count);
                var start = 0;
                foreach (var i in groups[g])
                {
                    members.Add((ids[i], start, batch[i].Length));
                    start += batch[i].Length;
                }

                // Null when the group's own bytes are a blob already: its members are then stored whole.
                _ = writer.AppendGroup(encoded[g].Id, encoded[g].Raw, encoded[g].Payload.AsSpan(0, encoded[g].Stored), members);
            }
        }
        catch (AggregateException e)
        {
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
        finally
        {
            foreach (var e in encoded)
            {
                if (e.Payload is not null)
                {
                    ArrayPool<byte>.Shared.Return(e.Payload);
                }
            }
        }
    }
}
