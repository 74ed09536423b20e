using DiffKeeper.Core;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What grouping did: groups written, members moved into them, groups given up for regrouping, and the pack
/// bytes the members took before against the group records that hold them now.</summary>
public sealed record GroupingResult(long Groups, long Members, long Regrouped, long BytesBefore, long BytesAfter);

/// <summary>
/// Compresses small blobs together (docs/store-format.md, "Groups"): whole, zstd-compressed blobs of at most
/// <see cref="MaxMember"/> bytes that some unpruned file version names, in path order (so similar files sit side by
/// side in one frame), are concatenated into groups of at most <see cref="PackFormat.MaxGroupLength"/> bytes,
/// each written as one record at <see cref="Level"/>; each member's row becomes a slice of its group (its id and
/// hash stay, so extent maps stay valid) and its own record garbage for repack. Groups whose live members fill
/// less than <see cref="RegroupBelow"/> of them (the rest became deltas or garbage), and small groups when there is
/// anything new to group, are regrouped with the new members. Runs on the maintenance thread like
/// <see cref="Compactor"/>: records are appended and fsynced before the step that moves the rows, a row moves only
/// from where this pass read it (compare and set), so a kill -9 between any two steps leaves the old rows on intact
/// records or the new rows on fsynced groups.
/// </summary>
internal static class Grouper
{
    /// <summary>Largest blob grouped: files of a source tree, and the small chunks of others.</summary>
    public const int MaxMember = 64 << 10;

    /// <summary>
    /// zstd level of a group. Measured on W3's first version (1,000 files, 11.0 MB, 1 MiB groups, one core under
    /// load 20): level 3 gives 2.79 MiB at ~150 MB/s, 6 gives 2.69 MiB at ~25 MB/s, 9 gives 2.52 MiB at ~7 MB/s, 19
    /// 2.16 MiB at ~1 MB/s. A whole W3 `record` (10 versions, interleaved with main's binary) took the same CPU at
    /// level 3 and 6 (0.48 and 0.50 s a version: grouping is not where the pass's time goes) and level 6 left 3.5%
    /// fewer pack bytes; above 6 the first session's pass would take seconds.
    /// </summary>
    public const int Level = 6;

    /// <summary>A group whose live members hold less than this fraction of its bytes is regrouped.</summary>
    public const double RegroupBelow = 0.8;

    /// <summary>A group smaller than this is regrouped with new members when there are any.</summary>
    public const int SmallGroup = PackFormat.MaxGroupLength / 4;

    private const long BytesPerStep = 64L << 20;

    private sealed record Member(long Row, BlobId Id, long FromPack, long FromOffset, BlobCodec FromCodec, int Raw, long Start);

    private sealed record PendingGroup(BlobId Id, long Pack, long Offset, int Raw, int Stored, List<Member> Members, long BytesBefore);

    /// <param name="histories">The versions compaction read: versions change only by prune and sweep, which ran
    /// before; a version added since names nothing this plan moves but through compare and set.</param>
    public static GroupingResult Run(TraceReader reader, PathHistories histories, IWriterSteps steps, MaintenancePack output, HashSet<long> refused,
        IProgress<string>? progress = null)
    {
        Dictionary<long, BlobLocation> blobs;
        using (reader.Snapshot())
        {
            blobs = reader.AllBlobs().ToDictionary(b => b.BlobRowId);
        }

        // Where each blob sits in path order: the first (newest) unpruned file version that names it, by path, then
        // its place in that version's map.
        var order = new Dictionary<long, (string Path, int Version, long Offset)>();
        foreach (var (key, versions) in histories.ByPath.OrderBy(p => p.Key[(p.Key.IndexOf('\0', StringComparison.Ordinal) + 1)..], StringComparer.Ordinal)
            .ThenBy(p => p.Key, StringComparer.Ordinal))
        {
            for (var i = versions.Count - 1; i >= 0; i--)
            {
                var v = versions[i];
                if (v is not { Kind: EntryKind.File, Pruned: false, Extents: { } map } || !ExtentMap.TryDecode(map, v.Size, out var extents))
                {
                    continue;
                }

                foreach (var e in extents)
                {
                    order.TryAdd(e.BlobRowId, (key, versions.Count - 1 - i, e.Offset));
                }
            }
        }

        var members = new Dictionary<long, List<BlobLocation>>();
        foreach (var b in blobs.Values)
        {
            if (b.IsSlice && b.Bases.Length == 1)
            {
                if (!members.TryGetValue(b.Bases[0], out var list))
                {
                    members[b.Bases[0]] = list = [];
                }

                list.Add(b);
            }
        }

        var fresh = blobs.Values.Where(b => b.Codec == BlobCodec.Zstd && b.RawLength is > 0 and <= MaxMember &&
            order.ContainsKey(b.BlobRowId) && !refused.Contains(b.BlobRowId)).ToList();
        var dissolve = new List<long>();
        foreach (var (group, slices) in members)
        {
            if (!blobs.TryGetValue(group, out var g) || g.Codec != BlobCodec.Group)
            {
                continue; // verify names it; regrouping would read through a damaged base
            }

            var live = slices.Sum(s => (long)s.RawLength);
            if (live < RegroupBelow * g.RawLength || (g.RawLength < SmallGroup && fresh.Count > 0))
            {
                dissolve.Add(group);
            }
        }

        var regrouping = dissolve.SelectMany(g => members[g]).Where(s => order.ContainsKey(s.BlobRowId)).ToList();
        var candidates = fresh.Concat(regrouping).OrderBy(b => order[b.BlobRowId].Path, StringComparer.Ordinal)
            .ThenBy(b => order[b.BlobRowId].Version).ThenBy(b => order[b.BlobRowId].Offset).ToList();
        if (candidates.Count < 2)
        {
            return new GroupingResult(0, 0, 0, 0, 0);
        }

        var ids = blobs.Values.Select(b => b.Id).ToHashSet();

        progress?.Report($"grouping {candidates.Count} small blobs");
        var result = new GroupingResult(0, 0, 0, 0, 0);
        var pending = new List<PendingGroup>();
        long pendingBytes = 0;
        var raw = GC.AllocateUninitializedArray<byte>(PackFormat.MaxGroupLength);
        var compressed = GC.AllocateUninitializedArray<byte>(Zstd.CompressBound(PackFormat.MaxGroupLength));
        var at = 0;
        while (at < candidates.Count)
        {
            steps.Stopping.ThrowIfCancellationRequested();
            var start = at;
            var length = 0;
            while (at < candidates.Count && length + candidates[at].RawLength <= PackFormat.MaxGroupLength)
            {
                length += candidates[at++].RawLength;
            }

            var batch = candidates.GetRange(start, at - start);
            if (batch.Count < 2)
            {
                continue; // a group of one would be the blob itself again (and share its hash)
            }

            var list = new List<Member>(batch.Count);
            long before = 0;
            var pos = 0;
            try
            {
                foreach (var b in batch)
                {
                    reader.Blobs.Read(b, raw.AsSpan(pos, b.RawLength));
                    list.Add(new Member(b.BlobRowId, b.Id, b.PackId, b.Offset, b.Codec, b.RawLength, pos));
                    before += b.IsSlice ? Share(b, blobs) : PackFormat.RecordSize(b.StoredLength);
                    pos += b.RawLength;
                }
            }
            catch (BlobDamagedException)
            {
                continue; // verify names the damage; a group must not copy it
            }

            var stored = Zstd.Compress(raw.AsSpan(0, length), compressed, Level);
            var regroups = batch.Any(b => b.IsSlice);
            if (!regroups && PackFormat.RecordSize(stored) >= before * 9 / 10)
            {
                refused.UnionWith(batch.Select(b => b.BlobRowId)); // not worth a group: not tried again by this maintainer
                continue;
            }

            var id = BlobId.Of(raw.AsSpan(0, length));
            if (!ids.Add(id))
            {
                continue; // the same bytes are a blob already (the catalog's hashes are unique)
            }

            var (pack, offset) = output.Append(id, BlobCodec.Group, length, compressed.AsSpan(0, stored), default);
            pending.Add(new PendingGroup(id, pack, offset, length, stored, list, before));
            pendingBytes += length;
            if (pendingBytes >= BytesPerStep)
            {
                result = Add(result, Flush(steps, output, pending));
                pendingBytes = 0;
            }
        }

        result = Add(result, Flush(steps, output, pending));
        return result with { Regrouped = dissolve.Count };
    }

    /// <summary>What a slice's bytes take of its group's record, in proportion to its raw length.</summary>
    private static long Share(in BlobLocation slice, Dictionary<long, BlobLocation> blobs) =>
        blobs.TryGetValue(slice.Bases[0], out var g) && g.RawLength > 0 ? (long)PackFormat.RecordSize(g.StoredLength) * slice.RawLength / g.RawLength : 0;

    private static GroupingResult Add(GroupingResult a, GroupingResult b) =>
        new(a.Groups + b.Groups, a.Members + b.Members, 0, a.BytesBefore + b.BytesBefore, a.BytesAfter + b.BytesAfter);

    /// <summary>Makes the group records durable, then adds the group rows and turns their members into slices, in one step.</summary>
    private static GroupingResult Flush(IWriterSteps steps, MaintenancePack output, List<PendingGroup> pending)
    {
        if (pending.Count == 0)
        {
            return new GroupingResult(0, 0, 0, 0, 0);
        }

        var groups = pending.ToList();
        pending.Clear();
        var sizes = output.Sync();
        return steps.Run("group", writer =>
        {
            writer.Begin();
            MaintenancePack.RecordSizes(writer, sizes);
            long made = 0, moved = 0, before = 0, after = 0;
            using var insert = writer.Database.Prepare(
                "INSERT OR IGNORE INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec, bases) VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)");
            using var slice = writer.Database.Prepare(
                "UPDATE blobs SET pack_id = -1, offset = ?5, stored_len = 0, codec = ?6, bases = ?7 WHERE id = ?1 AND pack_id = ?2 AND offset = ?3 AND codec = ?4");
            using var drop = writer.Database.Prepare("DELETE FROM blobs WHERE id = ?1");
            foreach (var g in groups)
            {
                insert.Bind(1, g.Id.ToArray()).Bind(2, g.Pack).Bind(3, g.Offset).Bind(4, (long)g.Raw).Bind(5, (long)g.Stored).Bind(6, (long)BlobCodec.Group).Run();
                if (writer.Database.Changes != 1)
                {
                    continue; // a blob with these bytes appeared meanwhile
                }

                var groupRow = writer.Database.LastInsertRowId;
                var bases = PackFormat.EncodeBases([groupRow]);
                var n = 0;
                foreach (var m in g.Members)
                {
                    // A row the writer stored whole again, or a pass re-encoded, since the plan stays where it is now.
                    slice.Bind(1, m.Row).Bind(2, m.FromPack).Bind(3, m.FromOffset).Bind(4, (long)m.FromCodec)
                        .Bind(5, m.Start).Bind(6, (long)BlobCodec.Slice).Bind(7, bases).Run();
                    n += writer.Database.Changes;
                }

                if (n == 0)
                {
                    drop.Bind(1, groupRow).Run();
                    continue;
                }

                made++;
                moved += n;
                before += g.BytesBefore;
                after += PackFormat.RecordSize(g.Stored);
            }

            writer.Commit();
            return new GroupingResult(made, moved, 0, before, after);
        });
    }
}
