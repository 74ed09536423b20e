using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What mark-and-sweep and repacking did.</summary>
public sealed record CollectionResult(long BlobsSwept, int PacksRepacked, int PacksDropped, long RecordsCopied, int PackFilesLeft);

/// <summary>
/// Mark and sweep, then repack (docs/store-format.md, "Compaction, prune and garbage collection"). Live blobs
/// are those an unpruned version's extent map names, plus their delta bases, transitively; other rows are
/// deleted. A pack whose live records fill less than the threshold of it is copied record by record into the
/// writer's new pack (fsynced before the commit that moves the rows and drops the old pack's row); its file is
/// deleted after that commit, when no reader has the trace open. A kill -9 between any two steps leaves the old
/// rows on the old records or the new rows on fsynced new records.
/// </summary>
public static class GarbageCollector
{
    private const long CommitEvery = 256L << 20;

    /// <summary>Deletes the rows of blobs nothing live needs; commits; returns how many.</summary>
    public static long Sweep(TraceWriter writer, TraceReader reader)
    {
        var bases = new Dictionary<long, long[]>();
        var all = new List<long>();
        foreach (var loc in reader.AllBlobs())
        {
            all.Add(loc.BlobRowId);
            if (loc.IsDelta)
            {
                bases[loc.BlobRowId] = loc.Bases;
            }
        }

        var live = new HashSet<long>();
        var stack = new Stack<long>();
        foreach (var v in reader.AllVersions())
        {
            if (!v.Pruned && v.Extents is not null && ExtentMap.TryDecode(v.Extents, v.Size, out var extents))
            {
                foreach (var e in extents)
                {
                    stack.Push(e.BlobRowId);
                }
            }
            else if (!v.Pruned && v.Extents is not null)
            {
                return 0; // a malformed map might name anything: sweeping could destroy what verify should report
            }

            while (stack.TryPop(out var row))
            {
                if (live.Add(row) && bases.TryGetValue(row, out var b))
                {
                    foreach (var x in b)
                    {
                        stack.Push(x);
                    }
                }
            }
        }

        long swept = 0;
        writer.Begin();
        using var delete = writer.Database.Prepare("DELETE FROM blobs WHERE id = ?1");
        foreach (var row in all)
        {
            if (!live.Contains(row))
            {
                delete.Bind(1, row).Run();
                swept++;
            }
        }

        writer.Commit();
        return swept;
    }

    /// <summary>Repacks packs whose live fraction is below <paramref name="threshold"/> and drops empty ones; commits.</summary>
    public static (int Repacked, int Dropped, long Copied) Repack(TraceWriter writer, TraceReader reader, double threshold)
    {
        var byPack = reader.AllBlobs().GroupBy(b => b.PackId).ToDictionary(g => g.Key, g => g.ToList());
        var current = writer.HasPack ? writer.Pack.PackId : -1;
        int repacked = 0, dropped = 0;
        long copied = 0, sinceCommit = 0;
        using var move = writer.Database.Prepare("UPDATE blobs SET pack_id = ?2, offset = ?3 WHERE id = ?1");
        using var drop = writer.Database.Prepare("DELETE FROM packs WHERE id = ?1");
        var buffer = new byte[PackFormat.RecordSize(Codecs.Zstd.CompressBound(PackFormat.MaxRawLength))];
        foreach (var (packId, committed) in reader.PacksCommitted())
        {
            if (packId == current)
            {
                continue;
            }

            var records = byPack.GetValueOrDefault(packId) ?? [];
            var liveBytes = records.Sum(r => (long)PackFormat.RecordSize(r.StoredLength));
            var total = Math.Max(1, committed - PackFormat.HeaderSize);
            if (records.Count > 0 && (double)liveBytes / total >= threshold)
            {
                continue;
            }

            try
            {
                foreach (var r in records)
                {
                    reader.Packs.CheckFraming(r);
                }
            }
            catch (BlobDamagedException)
            {
                continue; // keep a damaged pack as it is: verify names what is in it
            }

            writer.Begin();
            foreach (var r in records)
            {
                var record = reader.Packs.ReadRecord(r, buffer);
                var pack = writer.Pack;
                move.Bind(1, r.BlobRowId).Bind(2, pack.PackId).Bind(3, pack.AppendRecord(record)).Run();
                copied++;
                sinceCommit += record.Length;
            }

            drop.Bind(1, packId).Run();
            if (records.Count > 0)
            {
                repacked++;
            }
            else
            {
                dropped++;
            }

            if (sinceCommit >= CommitEvery)
            {
                writer.Commit();
                sinceCommit = 0;
            }
        }

        writer.Commit();
        return (repacked, dropped, copied);
    }
}
