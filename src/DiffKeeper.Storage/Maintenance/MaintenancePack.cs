using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// The pack maintenance appends to (re-encoded and repacked records), across passes: its own, not the writer's, so
/// a pass can fill it on its own thread while the writer keeps appending to its pack. Created on first use, rolled at
/// <see cref="PackFormat.RollSize"/>. Records are referenced only after <see cref="Sync"/> has made them durable and a
/// step has recorded the sizes it returned (<see cref="RecordSizes"/>) in the transaction that references them.
/// Not thread-safe: the maintenance thread appends and syncs; the sizes are recorded on the writer's thread.
/// </summary>
internal sealed class MaintenancePack(TraceWriter writer) : IDisposable
{
    private readonly List<(long Id, long Size)> _rolled = [];
    private PackWriter? _pack;

    /// <summary>The pack appended to now, or -1 (never repacked: it would be copied into itself).</summary>
    public long CurrentId => _pack?.PackId ?? -1;

    public (long PackId, long Offset) Append(BlobId id, BlobCodec codec, int rawLength, ReadOnlySpan<byte> payload, ReadOnlySpan<byte> baseDigest)
    {
        var pack = Current();
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
        var pack = Current();
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
        if (_pack is not null)
        {
            _pack.Sync();
            sizes.Add((_pack.PackId, _pack.Length));
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

    /// <summary>Closes the current pack (its size is returned by the next <see cref="Sync"/>); the next record starts a new one.</summary>
    public void Roll()
    {
        if (_pack is not null)
        {
            _pack.Sync();
            _rolled.Add((_pack.PackId, _pack.Length));
            _pack.Dispose();
            _pack = null;
        }
    }

    private PackWriter Current()
    {
        if (_pack is not null && _pack.Length >= PackFormat.RollSize)
        {
            Roll();
        }

        return _pack ??= writer.CreatePack();
    }

    public void Dispose() => _pack?.Dispose();
}
