using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// The packs maintenance appends to (re-encoded and repacked records), across passes: its own, not the writer's, so
/// a pass can fill them on its own thread while the writer keeps appending to its pack. Two of them, by how long
/// their records live: deltas (compaction's, and those a repack copies) in one, whole records and groups in the
/// other. A delta stays until its version is pruned, but a whole record is mostly a path's newest content, which the
/// next session's compaction turns into a delta: in one pack, each such death left the deltas beside it to be copied
/// again by the next repack (W1, one `record` a version: every pass copied the whole history of deltas, ~1 MB).
/// The pack of deltas is continued from an earlier pass when one is offered (<see cref="ContinueDeltasIn"/>), so
/// passes add to it without a new file each. Created on first use, rolled at <see cref="PackFormat.RollSize"/>.
/// Records are referenced only after <see cref="Sync"/> has made them durable and a step has recorded the sizes it
/// returned (<see cref="RecordSizes"/>) in the transaction that references them.
/// Not thread-safe: the maintenance thread appends and syncs; the sizes are recorded on the writer's thread.
/// </summary>
internal sealed class MaintenancePack(TraceWriter writer) : IDisposable
{
    private readonly List<(long Id, long Size)> _rolled = [];
    private PackWriter? _deltas;
    private PackWriter? _whole;
    private (long Id, long CommittedSize)? _offered;

    /// <summary>Whether <paramref name="packId"/> is one this appends to now (never repacked as it is: it would be copied into itself).</summary>
    public bool Holds(long packId) => _deltas?.PackId == packId || _whole?.PackId == packId;

    /// <summary>
    /// Offers an earlier pass's pack of deltas (<see cref="TraceReader.NewestDeltaPack"/>) to append the next deltas to,
    /// when none is open; it is opened only if its file is exactly its committed size. Null withdraws the offer.
    /// </summary>
    public void ContinueDeltasIn((long Id, long CommittedSize)? pack)
    {
        if (_deltas is null)
        {
            _offered = pack;
        }
    }

    public (long PackId, long Offset) Append(BlobId id, BlobCodec codec, int rawLength, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> baseDigest)
    {
        var pack = Current(IsDelta(codec));
        return (pack.PackId, pack.Append(id, codec, rawLength, payload, baseDigest));
    }

    /// <summary>
    /// Appends a record copied from offset <paramref name="from"/> of another pack. An aligned group
    /// (<see cref="AlignedGroup.IsAlignedAt"/>) keeps its members on 4 KiB boundaries: a record no row names (zeros,
    /// garbage as any superseded record) first takes the pack to an offset congruent to <paramref name="from"/>
    /// modulo 4 KiB, at most 4 KiB + 84 bytes per such group.
    /// </summary>
    public (long PackId, long Offset) AppendRecord(ReadOnlySpan<byte> record, long from)
    {
        var pack = Current(IsDelta((BlobCodec)record[PackFormat.RecordCodecOffset]));
        if (AlignedGroup.IsAlignedAt(record, from))
        {
            var gap = (int)(((from - pack.Length) % AlignedGroup.Alignment + AlignedGroup.Alignment) % AlignedGroup.Alignment);
            if (gap != 0)
            {
                gap += gap < PackFormat.RecordSize(0) ? AlignedGroup.Alignment : 0;
                var zeros = new byte[gap - PackFormat.RecordSize(0)];
                pack.Append(BlobId.Of(zeros), BlobCodec.Raw, zeros.Length, zeros);
            }
        }

        return (pack.PackId, pack.AppendRecord(record));
    }

    /// <summary>fsyncs everything appended; returns the committed sizes the next step must record.</summary>
    public List<(long Id, long Size)> Sync()
    {
        var sizes = new List<(long Id, long Size)>(_rolled);
        _rolled.Clear();
        foreach (var pack in (ReadOnlySpan<PackWriter?>)[_deltas, _whole])
        {
            if (pack is not null)
            {
                pack.Sync();
                sizes.Add((pack.PackId, pack.Length));
            }
        }

        return sizes;
    }

    /// <summary>Writer's thread, inside a step's transaction, before the rows that reference the records.</summary>
    public static void RecordSizes(TraceWriter writer, IEnumerable<(long Id, long Size)> sizes)
    {
        using var upsert = writer.Database.Prepare(
            "INSERT INTO packs(id, committed_size) VALUES (?1, ?2) ON CONFLICT(id) DO UPDATE SET committed_size = max(committed_size, excluded.committed_size)");
        foreach (var (id, size) in sizes)
        {
            upsert.Bind(1, id).Bind(2, size).Run();
        }
    }

    /// <summary>
    /// A repack is about to copy <paramref name="packId"/>: closes it if this appends to it (its size is returned by
    /// the next <see cref="Sync"/>; the next record of its kind starts a new pack), and never continues in it.
    /// </summary>
    public void Release(long packId)
    {
        if (_offered?.Id == packId)
        {
            _offered = null;
        }

        if (_deltas?.PackId == packId)
        {
            Roll(ref _deltas);
        }
        else if (_whole?.PackId == packId)
        {
            Roll(ref _whole);
        }
    }

    private static bool IsDelta(BlobCodec codec) => codec is BlobCodec.ZstdDelta or BlobCodec.BsDiff;

    private void Roll(ref PackWriter? pack)
    {
        if (pack is not null)
        {
            pack.Sync();
            _rolled.Add((pack.PackId, pack.Length));
            pack.Dispose();
            pack = null;
        }
    }

    private PackWriter Current(bool deltas)
    {
        ref var pack = ref deltas ? ref _deltas : ref _whole;
        if (pack is not null && pack.Length >= PackFormat.RollSize)
        {
            Roll(ref pack);
        }

        if (pack is null && deltas && _offered is { } offered)
        {
            _offered = null;
            pack = writer.ContinuePack(offered.Id, offered.CommittedSize);
        }

        return pack ??= writer.CreatePack();
    }

    public void Dispose()
    {
        _deltas?.Dispose();
        _whole?.Dispose();
    }
}
