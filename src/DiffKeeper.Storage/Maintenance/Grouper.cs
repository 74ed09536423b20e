using DiffKeeper.Core;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>What grouping did: groups written, members moved into them, old groups regrouped (their rows deleted), and the pack
/// bytes the members took before against the group records that hold them now.</summary>
public sealed record GroupingResult(long Groups, long Members, long Regrouped, long BytesBefore, long BytesAfter);

/// <summary>
/// Compresses small blobs together (docs/store-format.md, "Groups"): whole, zstd-compressed blobs of at most
/// <see cref="MaxMember"/> bytes that some unpruned file version names and that no pass considered before (above
/// <c>meta.grouped_through_blob</c>), in path order (so similar files sit side by side in one frame), are
/// concatenated into groups of at most <see cref="PackFormat.MaxGroupLength"/> bytes, each written as one record at
/// <see cref="Level"/> (<see cref="RegroupLevel"/> when it regroups older members); each member's row becomes a slice of its group (its id and hash stay, so extent maps stay
/// valid) and its own record garbage for repack. Only new blobs whose pack this pass's repack rewrites are taken
/// (<see cref="Reclaimed"/>; the others are left whole, below the mark, never tried again). Groups whose remaining
/// slices cover less than <see cref="RegroupBelow"/> of them (compaction re-encoded their superseded slices as
/// deltas: <see cref="DueGroups"/>), and small groups when there is anything new to group, are
/// regrouped among themselves, all or none (kept only when a tenth smaller than the groups they free), and the old
/// groups' rows are deleted in the same pass. Runs on the maintenance thread like <see cref="Compactor"/>: records are appended and fsynced before
/// the step that moves the rows, a row moves only from where this pass read it (compare and set), so a kill -9
/// between any two steps leaves the old rows on intact records or the new rows on fsynced groups.
/// </summary>
internal static class Grouper
{
    /// <summary>Largest blob grouped: files of a source tree, and the small chunks of others.</summary>
    public const int MaxMember = 64 << 10;

    /// <summary>
    /// zstd level of a group of new blobs only (their first grouping: a first session of a source tree is most of
    /// it, once). Measured on W3's first version (1,000 files, 11.0 MB, 1 MiB groups, one core under load 20): level
    /// 3 gives 2.79 MiB at ~150 MB/s, 6 gives 2.69 MiB at ~25 MB/s, 9 gives 2.52 MiB at ~7 MB/s, 19 2.16 MiB at
    /// ~1 MB/s; above 6 the first session's pass would take seconds.
    /// </summary>
    public const int Level = 6;

    /// <summary>
    /// zstd level of a group that regroups members of older groups: the recurring cost of grouping. A pass
    /// recompresses about the bytes edited since the last regroup divided by 1 - <see cref="RegroupBelow"/>; level 3
    /// is about 4% larger than 6 and several times faster (docs/benchmarks.md).
    /// </summary>
    public const int RegroupLevel = 3;

    /// <summary>
    /// A group whose live members hold less than this fraction of its bytes is regrouped (and one whose newest
    /// content holds less is due: <see cref="DueGroups"/>). Regrouping recompresses about the bytes edited since
    /// divided by 1 - this fraction, so a half keeps that to twice the edits, at up to half a group's bytes
    /// superseded or dead meanwhile (W3 at 0.8: ~3.6 MB regrouped per session and ~0.13 s of CPU per `record` under
    /// load 25; docs/benchmarks.md).
    /// </summary>
    public const double RegroupBelow = 0.5;

    /// <summary>
    /// A group smaller than this is regrouped with new members when there are any; and small blobs no pass
    /// considered yet make <c>record</c> run a pass for them alone once they add up to this much.
    /// </summary>
    public const int SmallGroup = PackFormat.MaxGroupLength / 4;

    /// <summary>Fewest new small whole blobs that make <c>record</c> run its pass after the session for grouping alone (TraceWriter.HasMaintenanceWork).</summary>
    public const int FewestForAPass = 32;

    /// <summary>
    /// The groups a pass regroups because of compaction: those whose slices that are some path's newest content
    /// (or a delta base of it, transitively) hold less than <see cref="RegroupBelow"/> of their bytes (the rest is dead, or superseded versions that
    /// compaction re-encodes as deltas in this pass). Compaction leaves the superseded slices of other groups alone:
    /// re-encoding one costs decoding its group and saves nothing until the group is regrouped.
    /// </summary>
    public static HashSet<long> DueGroups(IReadOnlyDictionary<long, (BlobCodec Codec, int Stored, int Raw)> rows,
        IReadOnlyDictionary<long, long[]> bases, IReadOnlyDictionary<long, long> starts, HashSet<long> heads)
    {
        // A slice a newest content's delta decodes through (a delta written while recording) is as live as that
        // content: compaction cannot re-encode it (the delta depends on it), so regrouping would gain nothing.
        var live = new HashSet<long>(heads);
        var stack = new Stack<long>(heads);
        while (stack.TryPop(out var at))
        {
            if (rows.TryGetValue(at, out var d) && d.Codec is BlobCodec.ZstdDelta or BlobCodec.BsDiff && bases.TryGetValue(at, out var next))
            {
                foreach (var b in next.Where(live.Add))
                {
                    stack.Push(b);
                }
            }
        }

        // What the live slices cover of each group, not the sum of their lengths: the states of a grown file overlap.
        var kept = new Dictionary<long, List<(long, int)>>();
        foreach (var row in live)
        {
            if (rows.TryGetValue(row, out var r) && r.Codec == BlobCodec.Slice && bases.TryGetValue(row, out var g) && g.Length == 1 &&
                starts.TryGetValue(row, out var start))
            {
                if (!kept.TryGetValue(g[0], out var spans))
                {
                    kept[g[0]] = spans = [];
                }

                spans.Add((start, r.Raw));
            }
        }

        return [.. rows.Where(g => g.Value.Codec == BlobCodec.Group &&
            (kept.TryGetValue(g.Key, out var spans) ? GroupSpans.Covered(spans) : 0) < RegroupBelow * g.Value.Raw).Select(g => g.Key)];
    }

    private const long BytesPerStep = 64L << 20;

    /// <summary>Bytes a group's members may take: the rest is for a trailer (<see cref="IngestGroup.TrailerLength"/>).</summary>
    private const int Room = PackFormat.MaxGroupLength - IngestGroup.TrailerLength;

    private sealed record Member(long Row, BlobId Id, long FromPack, long FromOffset, BlobCodec FromCodec, int Raw, long Start);

    private sealed record PendingGroup(BlobId Id, long Pack, long Offset, int Raw, int Stored, List<Member> Members, long BytesBefore);

    /// <param name="histories">The versions compaction read: versions change only by prune and sweep, which ran
    /// before; a version added since names nothing this plan moves but through compare and set.</param>
    /// <param name="repackThreshold">The repack step's: a pack whose live records fall below this fraction of it is
    /// rewritten in this pass.</param>
    public static GroupingResult Run(TraceReader reader, PathHistories histories, IWriterSteps steps, MaintenancePack output,
        double repackThreshold, IProgress<string>? progress = null)
    {
        Dictionary<long, BlobLocation> blobs;
        IReadOnlyList<(long Id, long CommittedSize)> packs;
        long mark;
        using (reader.Snapshot())
        {
            blobs = reader.AllBlobs().ToDictionary(b => b.BlobRowId);
            packs = reader.PacksCommitted();
            mark = reader.GroupedThrough();
        }

        // Every row of the snapshot is considered now: grouped, or judged not worth a group (and never tried again),
        // or not a candidate. Rows the writer adds meanwhile have greater ids.
        var through = Math.Max(mark, blobs.Count == 0 ? 0 : blobs.Keys.Max());

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

        var fresh = Reclaimed(blobs.Values.Where(b => b.Codec == BlobCodec.Zstd && b.RawLength is > 0 and <= MaxMember && b.BlobRowId > mark &&
            order.ContainsKey(b.BlobRowId)).ToList(), blobs, packs, repackThreshold);

        // Groups to dissolve: mostly dead (compaction moved their superseded members out), or small while there is
        // something new to group with; a group no slice names any more (all its members moved) goes as well.
        var dissolve = new List<long>();
        foreach (var g in blobs.Values.Where(b => b.Codec == BlobCodec.Group))
        {
            // What the slices left cover, not the sum of their lengths: the states of a grown file overlap.
            var live = GroupSpans.Covered((members.GetValueOrDefault(g.BlobRowId) ?? []).Select(s => (s.Offset, s.RawLength)));
            if (live < RegroupBelow * g.RawLength || (g.RawLength < SmallGroup && fresh.Count > 0))
            {
                dissolve.Add(g.BlobRowId);
            }
        }

        // A group a version names directly (a chunk equal to its bytes) is a blob like any other: sweep decides.
        var unnamed = dissolve.Where(g => !order.ContainsKey(g)).Select(g => (g, blobs[g].Id)).ToList();
        var regrouping = dissolve.SelectMany(g => members.GetValueOrDefault(g) ?? []).Where(s => order.ContainsKey(s.BlobRowId)).ToList();
        if (fresh.Count + regrouping.Count < 2)
        {
            return new GroupingResult(0, 0, Finish(steps, unnamed, through, mark), 0, 0);
        }

        var ids = blobs.Values.Select(b => b.Id).ToHashSet();

        progress?.Report($"grouping {fresh.Count + regrouping.Count} small blobs");
        var result = new GroupingResult(0, 0, 0, 0, 0);
        var pending = new List<PendingGroup>();
        long pendingBytes = 0;
        var buffers = new Buffers();
        // New blobs first: a group is kept when it saves a tenth of their records (else they stay below the mark
        // once this pass finishes, so they are never tried again).
        foreach (var g in Batches(reader, InOrder(fresh, order), buffers, Level, steps.Stopping))
        {
            if (PackFormat.RecordSize(g.Stored) >= g.Before * 9 / 10 || !ids.Add(g.Id))
            {
                continue; // the same bytes may be a blob already (the catalog's hashes are unique)
            }

            var (pack, offset) = output.Append(g.Id, BlobCodec.Group, g.Length, buffers.Compressed.AsSpan(0, g.Stored), default);
            pending.Add(new PendingGroup(g.Id, pack, offset, g.Length, g.Stored, g.Members, g.Before));
            pendingBytes += g.Length;
            if (pendingBytes >= BytesPerStep)
            {
                result = Add(result, Flush(steps, output, pending));
                pendingBytes = 0;
            }
        }

        // Then the members of the groups to dissolve, all or none: the new groups are kept only when they take a
        // tenth less than the records of the groups they replace (a group whose every member moved out is deleted
        // either way, and is not counted). Small groups of a grown file's states, merged, took more than before.
        var made = new List<(Batch Group, byte[] Bytes)>();
        foreach (var g in Batches(reader, InOrder(regrouping, order), buffers, RegroupLevel, steps.Stopping, fewest: 1))
        {
            if (ids.Add(g.Id))
            {
                made.Add((g, buffers.Compressed.AsSpan(0, g.Stored).ToArray()));
            }
        }

        // Only a group every member of which moves is freed (a damaged member, or a batch refused, keeps it named),
        // and only by the repack of its pack: a group whose pack stays (live records above the threshold once it
        // goes) frees nothing this pass, and its replacement would only add.
        var moving = made.SelectMany(m => m.Group.Members).Select(m => m.Row).ToHashSet();
        var freedGroups = regrouping.GroupBy(s => s.Bases[0]).Where(g => g.All(s => moving.Contains(s.BlobRowId)))
            .Select(g => blobs[g.Key]).ToList();
        var replaced = Reclaimed(freedGroups, blobs, packs, repackThreshold).Sum(g => (long)PackFormat.RecordSize(g.StoredLength));

        if (made.Sum(m => (long)PackFormat.RecordSize(m.Group.Stored)) < replaced * 9 / 10)
        {
            var first = true;
            foreach (var (g, bytes) in made)
            {
                var (pack, offset) = output.Append(g.Id, BlobCodec.Group, g.Length, bytes, default);
                pending.Add(new PendingGroup(g.Id, pack, offset, g.Length, g.Stored, g.Members, first ? replaced : 0));
                first = false;
                pendingBytes += g.Length;
                if (pendingBytes >= BytesPerStep)
                {
                    result = Add(result, Flush(steps, output, pending));
                    pendingBytes = 0;
                }
            }
        }

        result = Add(result, Flush(steps, output, pending));
        return result with { Regrouped = Finish(steps, unnamed, through, mark) };
    }

    /// <summary>
    /// The new blobs whose records this pass's repack will free once they are grouped: a record stays in its pack,
    /// dead, until the pack is rewritten, which a pack surely is only once its live records fall below the threshold
    /// (<see cref="RepackRule"/> without its budget: the budget frees the dead records there are, and is no reason
    /// to make more). Grouping the others would add the group and free nothing: 77 stray chunks of an untar's 14 MB
    /// pack grouped into 465 KB grew the trace by as much. They are left whole (and below the mark).
    /// </summary>
    private static List<BlobLocation> Reclaimed(List<BlobLocation> fresh, Dictionary<long, BlobLocation> blobs,
        IReadOnlyList<(long Id, long CommittedSize)> packs, double threshold)
    {
        var live = new Dictionary<long, long>();
        foreach (var b in blobs.Values.Where(b => b.HasRecord))
        {
            live[b.PackId] = live.GetValueOrDefault(b.PackId) + PackFormat.RecordSize(b.StoredLength);
        }

        foreach (var b in fresh)
        {
            live[b.PackId] -= PackFormat.RecordSize(b.StoredLength);
        }

        var taken = RepackRule.Taken(packs, live, threshold, budget: 0);
        return fresh.Where(b => taken.Contains(b.PackId)).ToList();
    }

    /// <summary>Members in path order, and within a path by place in the file, newest first: the states of one
    /// region of a file side by side (a grown file's shorter states then follow its longest, and add nothing).</summary>
    private static List<BlobLocation> InOrder(List<BlobLocation> blobs, Dictionary<long, (string Path, int Version, long Offset)> order) =>
        blobs.OrderBy(b => order[b.BlobRowId].Path, StringComparer.Ordinal).ThenBy(b => order[b.BlobRowId].Offset)
            .ThenBy(b => order[b.BlobRowId].Version).ToList();

    private sealed class Buffers
    {
        public readonly byte[] Raw = GC.AllocateUninitializedArray<byte>(PackFormat.MaxGroupLength);
        public readonly byte[] One = GC.AllocateUninitializedArray<byte>(PackFormat.MaxGroupLength);
        public readonly byte[] Compressed = GC.AllocateUninitializedArray<byte>(Zstd.CompressBound(PackFormat.MaxGroupLength));
    }

    /// <summary>A group made: its raw bytes' id and length, its compressed length (the bytes in
    /// <see cref="Buffers.Compressed"/> until the next one is made), its members and what they took before.</summary>
    private sealed record Batch(BlobId Id, int Length, int Stored, List<Member> Members, long Before);

    /// <summary>
    /// The groups <paramref name="candidates"/> make, in their order, each of at least two members. Members go back
    /// to back; a member that is a prefix of the last one placed, or that begins with all of it (a file's states
    /// while it grew, in either order), is a slice from the same start and adds only the bytes it has beyond it
    /// (<see cref="GroupSpans"/>). A group whose bytes equal one member's gets a trailer, as while recording
    /// (<see cref="IngestGroup.TrailerLength"/>): a group is a blob, and blob ids are unique.
    /// </summary>
    /// <param name="fewest">Fewest members of a group: 2 for new blobs (one would be the blob again); 1 when regrouping,
    /// so the last member of a dissolved group is not left alone on it (its trailer makes it another blob).</param>
    private static IEnumerable<Batch> Batches(TraceReader reader, List<BlobLocation> candidates, Buffers buffers, int level,
        CancellationToken stopping, int fewest = 2)
    {
        var raw = buffers.Raw;
        var at = 0;
        while (at < candidates.Count)
        {
            stopping.ThrowIfCancellationRequested();
            var list = new List<Member>();
            long before = 0;
            int length = 0, chainStart = 0, chainLength = 0;
            while (at < candidates.Count)
            {
                var b = candidates[at];
                try
                {
                    reader.Blobs.Read(b, buffers.One.AsSpan(0, b.RawLength));
                }
                catch (BlobDamagedException)
                {
                    at++; // verify names the damage; a group must not copy it
                    continue;
                }

                var data = buffers.One.AsSpan(0, b.RawLength);
                var chain = raw.AsSpan(chainStart, chainLength);
                int start;
                if (chainLength > 0 && data.Length <= chainLength && chain[..data.Length].SequenceEqual(data))
                {
                    start = chainStart;
                }
                else if (chainLength > 0 && data.Length > chainLength && chainStart + data.Length <= Room && data[..chainLength].SequenceEqual(chain))
                {
                    start = chainStart;
                    data[chainLength..].CopyTo(raw.AsSpan(length));
                    length = chainStart + data.Length;
                    chainLength = data.Length;
                }
                else if (length + data.Length <= Room)
                {
                    start = length;
                    data.CopyTo(raw.AsSpan(length));
                    length += data.Length;
                    chainStart = start;
                    chainLength = data.Length;
                }
                else
                {
                    at += list.Count == 0 ? 1 : 0; // larger than a group can hold (none is): never grouped
                    break; // the next group's first member
                }

                at++;
                list.Add(new Member(b.BlobRowId, b.Id, b.PackId, b.Offset, b.Codec, b.RawLength, start));
                before += b.IsSlice ? 0 : PackFormat.RecordSize(b.StoredLength);
            }

            if (list.Count < fewest)
            {
                continue; // a group of one would be the blob itself again (and share its hash)
            }

            if (list.Any(m => m.Start == 0 && m.Raw == length))
            {
                System.Security.Cryptography.RandomNumberGenerator.Fill(raw.AsSpan(length, IngestGroup.TrailerLength));
                length += IngestGroup.TrailerLength;
            }

            var stored = Zstd.Compress(raw.AsSpan(0, length), buffers.Compressed, level);
            yield return new Batch(BlobId.Of(raw.AsSpan(0, length)), length, stored, list, before);
        }
    }

    /// <summary>
    /// The pass's last step: deletes the rows of the regrouped groups no slice names any more (nor a version the
    /// writer added since the pass began: a group is a blob a chunk could equal), so repack frees their records
    /// without a second sweep, and records the mark. Returns how many groups it deleted.
    /// </summary>
    private static int Finish(IWriterSteps steps, List<(long Row, BlobId Id)> regrouped, long through, long mark)
    {
        if (regrouped.Count == 0 && through == mark)
        {
            return 0;
        }

        return steps.Run("grouped", writer =>
        {
            writer.Begin();
            var deleted = new List<BlobId>();
            // The groups some slice still names, read once (no index covers `bases`: a query per group scanned every row).
            var named = new HashSet<long>();
            if (regrouped.Count > 0)
            {
                using var slices = writer.Database.Prepare("SELECT DISTINCT bases FROM blobs WHERE codec = ?1");
                slices.Bind(1, (long)BlobCodec.Slice);
                while (slices.Step())
                {
                    if (slices.BlobOrNull(0) is { } bases && PackFormat.DecodeBases(bases) is [var group])
                    {
                        named.Add(group);
                    }
                }
            }

            using (var delete = writer.Database.Prepare("DELETE FROM blobs WHERE id = ?1 AND codec = ?2"))
            {
                foreach (var (row, id) in regrouped)
                {
                    if (writer.ReferencedSinceTracking.Contains(row) || named.Contains(row))
                    {
                        continue; // a slice the plan did not move (the writer stored it again) still needs it: a later sweep decides
                    }

                    delete.Bind(1, row).Bind(2, (long)BlobCodec.Group).Run();
                    if (writer.Database.Changes == 1)
                    {
                        deleted.Add(id);
                    }
                }
            }

            writer.SetGroupedThrough(through);
            writer.Commit();
            writer.ForgetBlobs(deleted);
            return deleted.Count;
        });
    }

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
