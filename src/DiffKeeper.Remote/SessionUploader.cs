using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Remote;

/// <summary>What one upload did.</summary>
public sealed record UploadResult(string Key, long Generation, bool Published, long NewBlobs, long ReusedBlobs, long NewPackBytes, long SegmentBytes);

/// <summary>
/// Uploads sessions of a local trace to a remote store (docs/store-format.md, "Remote stores": writing): the blobs the
/// bucket lacks into new content-named packs with their indexes, then the session's catalog segment (a delta against
/// a whole segment already there when that is small), then its manifest. Runs beside the trace's writer (it reads like any reader: a snapshot of the last commit). One uploader
/// per process and store; not thread-safe.
/// </summary>
public sealed class SessionUploader
{
    private const int MaxPackBytes = 64 << 20;
    private const int MaxAttempts = 5;
    private readonly IObjectStore _store;
    private readonly Dictionary<string, long> _generations = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _uploadedBytes = new(StringComparer.Ordinal);
    private readonly SegmentBases _bases;
    private readonly Dictionary<string, string> _keyBases = new(StringComparer.Ordinal);
    private readonly Dictionary<string, DateTimeOffset> _confirmedBases = new(StringComparer.Ordinal); // base → when last seen in the bucket
    private bool _bucketBaseTried;

    public SessionUploader(IObjectStore store, string cacheDir)
    {
        _store = store;
        Summary = new RemoteBlobSummary(store, cacheDir);
        _bases = new SegmentBases(store, cacheDir);
    }

    public RemoteBlobSummary Summary { get; }

    /// <summary>
    /// The grace period of the `forget` runs on this store (docs/store-format.md, "Deleting"): when the listing of
    /// <c>index/</c> that the upload relied on is older than half of it, <c>index/</c> is listed again right before
    /// the manifest is written, and whatever a `forget` deleted meanwhile is uploaded again. Default 1 h.
    /// </summary>
    public TimeSpan ForgetGrace { get; init; } = RemoteLayout.DefaultForgetGrace;

    /// <summary>
    /// Uploads the blobs session <paramref name="sessionId"/> of <paramref name="traceDir"/> needs and the bucket
    /// lacks; with <paramref name="publish"/>, then its segment and a new manifest generation (a keep-mode cut, or
    /// the end of a session). The manifest names only objects the bucket held at a listing younger than half the
    /// <see cref="ForgetGrace"/>, or that this upload wrote since.
    /// </summary>
    public async Task<UploadResult> UploadAsync(string traceDir, long sessionId, bool publish, CancellationToken cancel)
    {
        traceDir = Path.GetFullPath(traceDir);
        if (Summary.RefreshedAt == DateTimeOffset.MinValue || DateTimeOffset.UtcNow - Summary.RefreshedAt > TimeSpan.FromSeconds(2))
        {
            await Summary.RefreshAsync(cancel).ConfigureAwait(false);
        }

        using var reader = TraceReader.Open(traceDir);
        var scratch = Path.Combine(traceDir, "upload-" + Environment.ProcessId + ".tmp");
        Directory.CreateDirectory(scratch);
        try
        {
            long newBlobs = 0, newBytes = 0;
            for (var attempt = 1; ; attempt++)
            {
                var segmentPath = Path.Combine(scratch, $"segment-{attempt}.db");
                using var segment = SegmentDatabase.Create(segmentPath, Path.Combine(traceDir, "catalog.db"), sessionId);
                var session = segment.Session();
                var rows = segment.ReachableBlobRows();

                // The blobs the bucket lacks, read from the local packs (whole records copied, deltas decoded and stored whole).
                var locations = rows.Select(reader.Blob).ToList();
                var fresh = locations.Where(l => !Summary.TryGet(l.Id, out _)).DistinctBy(l => l.Id).ToList();
                if (fresh.Count > 0 && DateTimeOffset.UtcNow - Summary.RefreshedAt > TimeSpan.FromMilliseconds(200))
                {
                    await Summary.RefreshAsync(cancel).ConfigureAwait(false); // a pack another writer finished meanwhile
                    fresh = locations.Where(l => !Summary.TryGet(l.Id, out _)).DistinctBy(l => l.Id).ToList();
                }

                var packBytes = await UploadPacksAsync(reader, fresh, cancel).ConfigureAwait(false);
                newBlobs += fresh.Count;
                newBytes += packBytes;
                var key = RemoteLayout.SessionKey(session.Host, traceDir, sessionId, session.StartedWallNs);
                _uploadedBytes[key] = _uploadedBytes.GetValueOrDefault(key) + packBytes;
                if (!publish)
                {
                    return new UploadResult(key, 0, false, newBlobs, locations.Count - fresh.Count, newBytes, 0);
                }

                var packs = segment.WriteBlobRows(locations, Summary);
                segment.Close();
                var (segmentBytes, segmentBase) = await EncodeSegmentAsync(key, await File.ReadAllBytesAsync(segmentPath, cancel).ConfigureAwait(false), cancel).ConfigureAwait(false);
                var segmentSha = RemoteLayout.Sha(segmentBytes);
                await _store.PutAsync(RemoteLayout.Segment(segmentSha), segmentBytes, createOnly: true, cancel).ConfigureAwait(false);
                if (segmentBase is null)
                {
                    // Whole and in the bucket: the base of this key's later cuts, and of later sessions of this cache.
                    _bases.Keep(segmentSha, segmentBytes);
                    _keyBases[key] = segmentSha;
                    _confirmedBases[segmentSha] = DateTimeOffset.UtcNow;
                }

                // What this upload relies on was seen in the bucket at reliedOn or later (docs/store-format.md, "Deleting").
                var reliedOn = segmentBase is null ? Summary.RefreshedAt
                    : _confirmedBases.TryGetValue(segmentBase, out var seen) && seen < Summary.RefreshedAt ? seen
                    : _confirmedBases.ContainsKey(segmentBase) ? Summary.RefreshedAt : DateTimeOffset.MinValue;
                if (await VanishedAsync(packs, segmentSha, segmentBase, force: false, cancel).ConfigureAwait(false) is { Count: > 0 } vanished)
                {
                    Redo(vanished, attempt, "before its manifest was written");
                    continue;
                }

                var generation = await NextGenerationAsync(key, cancel).ConfigureAwait(false);
                var manifest = new SessionManifest(key, generation, session.State, session.StartedWallNs, session.EndedNs, session.ExitCode,
                    session.Command, session.Host, session.Capture, session.Roots, session.Events, segmentSha, segmentBytes.Length, packs,
                    _uploadedBytes[key], segmentBase);
                await _store.PutAsync(RemoteLayout.Manifest(key, generation), manifest.ToJson(), createOnly: true, cancel).ConfigureAwait(false);

                // A `forget` that listed before this manifest may delete what it names after the check above: such a
                // run is running now, or has left a marker dated after reliedOn; then look again and repair.
                if (await ForgetRanSinceAsync(reliedOn, cancel).ConfigureAwait(false)
                    && await VanishedAsync(packs, segmentSha, segmentBase, force: true, cancel).ConfigureAwait(false) is { Count: > 0 } gone)
                {
                    Redo(gone, attempt, "after its manifest was written");
                    continue;
                }

                return new UploadResult(key, generation, true, newBlobs, locations.Count - fresh.Count, newBytes, segmentBytes.Length);
            }
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    /// <summary>
    /// How often a writer lists <c>forgetting/</c> again while a `forget` runs (docs/store-format.md, "Deleting", step 5).
    /// </summary>
    public TimeSpan ForgetPoll { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Whether a `forget` may have deleted something since <paramref name="since"/>: waits while a run's lease is
    /// live, then true when any run marker is dated at or after <paramref name="since"/> less the lease.
    /// </summary>
    private async Task<bool> ForgetRanSinceAsync(DateTimeOffset since, CancellationToken cancel)
    {
        var told = false;
        while (true)
        {
            var markers = await _store.ListAsync(RemoteLayout.ForgettingPrefix, cancel).ConfigureAwait(false);
            var now = DateTimeOffset.UtcNow;
            if (!markers.Any(m => m.Key.EndsWith(".running", StringComparison.Ordinal) && m.LastModified > now - RemoteLayout.ForgetLease))
            {
                return markers.Any(m => since == DateTimeOffset.MinValue || m.LastModified >= since - RemoteLayout.ForgetLease);
            }

            if (!told)
            {
                TraceReader.Warning?.Invoke($"a 'forget' is running on {_store.Name}: this upload waits for it to end, then checks that what it names is still there");
                told = true;
            }

            await Task.Delay(ForgetPoll, cancel).ConfigureAwait(false);
        }
    }

    private void Redo(List<string> vanished, int attempt, string when)
    {
        _confirmedBases.Clear();
        if (attempt == MaxAttempts)
        {
            throw new DiffKeeperException(ExitCode.SystemError,
                $"objects this upload to {_store.Name} needs were deleted {attempt} times (last {vanished[0]}, {when}): " +
                $"a 'diffkeeper forget' with a grace period shorter than the upload takes runs on the store; give forget a longer --grace, or tell writers the same one (DIFFKEEPER_FORGET_GRACE)");
        }

        TraceReader.Warning?.Invoke($"{vanished.Count} objects this upload names were deleted from {_store.Name} {when} (a 'forget' ran meanwhile): uploading them again");
    }

    /// <summary>
    /// The writer's side of `forget`'s grace period: when the listing the upload relied on is older than half the
    /// grace (or with <paramref name="force"/>), lists <c>index/</c> and the segment again; returns what a `forget`
    /// deleted (an empty list: nothing, or the listing is recent enough that no `forget` may have deleted anything
    /// this upload names).
    /// </summary>
    private async Task<List<string>> VanishedAsync(IReadOnlyList<string> packs, string segmentSha, string? segmentBase, bool force, CancellationToken cancel)
    {
        if (!force && DateTimeOffset.UtcNow - Summary.RefreshedAt <= ForgetGrace / 2)
        {
            return [];
        }

        await Summary.RefreshAsync(cancel).ConfigureAwait(false);
        var vanished = packs.Where(p => !Summary.Has(p)).Select(RemoteLayout.Index).ToList();
        string[] segments = segmentBase is null ? [segmentSha] : [segmentSha, segmentBase];
        foreach (var sha in segments)
        {
            var checkedAt = DateTimeOffset.UtcNow;
            if (await SegmentExistsAsync(sha, cancel).ConfigureAwait(false))
            {
                if (sha == segmentBase)
                {
                    _confirmedBases[sha] = checkedAt;
                }
            }
            else
            {
                vanished.Add(RemoteLayout.Segment(sha));
                if (sha == segmentBase)
                {
                    _bases.Drop(sha);
                    foreach (var k in _keyBases.Where(k => k.Value == sha).Select(k => k.Key).ToList())
                    {
                        _keyBases.Remove(k);
                    }
                }
            }
        }

        return vanished;
    }

    private async Task<bool> SegmentExistsAsync(string sha, CancellationToken cancel)
    {
        var name = RemoteLayout.Segment(sha);
        return (await _store.ListAsync(name, cancel).ConfigureAwait(false)).Any(o => o.Key == name);
    }

    /// <summary>
    /// The segment object for <paramref name="database"/>: a delta against a whole segment in the bucket when there
    /// is one and the delta is under half the whole segment, else whole (docs/store-format.md, "delta segment").
    /// </summary>
    private async Task<(byte[] Segment, string? Base)> EncodeSegmentAsync(string key, byte[] database, CancellationToken cancel)
    {
        var whole = SegmentDatabase.Pack(database);
        if (await BaseAsync(key, cancel).ConfigureAwait(false) is { } baseSha)
        {
            var delta = SegmentDatabase.PackDelta(database, await _bases.DatabaseAsync(baseSha, "a delta segment", cancel).ConfigureAwait(false));
            if (delta.Length * 2 < whole.Length)
            {
                return (delta, baseSha);
            }
        }

        return (whole, null);
    }

    /// <summary>
    /// The whole segment a new segment of <paramref name="key"/> is a delta against: the key's own last whole one,
    /// else the newest base the cache holds that is still in the bucket, else (once per uploader) the base of the
    /// bucket's newest session; null when there is none.
    /// </summary>
    private async Task<string?> BaseAsync(string key, CancellationToken cancel)
    {
        if (_keyBases.TryGetValue(key, out var own))
        {
            return own;
        }

        if (_bases.Newest() is { } held)
        {
            var checkedAt = DateTimeOffset.UtcNow;
            if (_confirmedBases.ContainsKey(held) || await SegmentExistsAsync(held, cancel).ConfigureAwait(false))
            {
                _confirmedBases.TryAdd(held, checkedAt);
                return held;
            }

            _bases.Drop(held); // forgotten and deleted since
        }

        if (_bucketBaseTried)
        {
            return null;
        }

        _bucketBaseTried = true;
        var newest = (await _store.ListAsync(RemoteLayout.SessionsPrefix, cancel).ConfigureAwait(false))
            .Select(o => RemoteLayout.ParseManifest(o.Key)).OfType<(string Key, long Generation)>()
            .OrderByDescending(m => m.Key, StringComparer.Ordinal).ThenByDescending(m => m.Generation).ToList();
        if (newest.Count == 0)
        {
            return null;
        }

        try
        {
            var name = RemoteLayout.Manifest(newest[0].Key, newest[0].Generation);
            if (await _store.GetAsync(name, cancel: cancel).ConfigureAwait(false) is not { } json)
            {
                return null; // forgotten since the listing
            }

            var manifest = SessionManifest.Parse(name, json);
            var found = manifest.SegmentBase ?? manifest.Segment;
            var checkedAt = DateTimeOffset.UtcNow;
            await _bases.DatabaseAsync(found, name, cancel).ConfigureAwait(false);
            _confirmedBases.TryAdd(found, checkedAt);
            return found;
        }
        catch (DiffKeeperException e) when (e.Code is ExitCode.Corrupt or ExitCode.UnsupportedFormat)
        {
            // no usable base there: this segment goes whole
        }

        return null;
    }

    /// <summary>The remote key of a local session (host, trace directory, id, start: see <see cref="RemoteLayout.SessionKey"/>).</summary>
    public static string KeyOf(string traceDir, long sessionId)
    {
        traceDir = Path.GetFullPath(traceDir);
        using var readers = ReaderLock.Acquire(traceDir); // before the open: a closing writer may be renaming the catalog (TraceReader.Open)
        using var db = SqliteDatabase.Open(Path.Combine(traceDir, "catalog.db"), readOnly: true);
        using var r = db.Prepare("SELECT coalesce(host, ''), started_wall_ns FROM sessions WHERE id = ?1");
        r.Bind(1, sessionId);
        if (!r.Step())
        {
            throw new DiffKeeperException(ExitCode.NotFound, $"the trace has no session {sessionId}");
        }

        var key = RemoteLayout.SessionKey(r.String(0), traceDir, sessionId, r.Int64(1));
        r.Reset();
        return key;
    }

    /// <summary>The manifest generations already in the bucket for <paramref name="key"/> (an empty list: none).</summary>
    public async Task<List<long>> GenerationsAsync(string key, CancellationToken cancel) =>
        (await _store.ListAsync(RemoteLayout.SessionsPrefix + key + "/", cancel).ConfigureAwait(false))
            .Select(o => RemoteLayout.ParseManifest(o.Key)).OfType<(string Key, long Generation)>().Select(m => m.Generation).ToList();

    private async Task<long> NextGenerationAsync(string key, CancellationToken cancel)
    {
        if (!_generations.TryGetValue(key, out var last))
        {
            last = (await GenerationsAsync(key, cancel).ConfigureAwait(false)).DefaultIfEmpty(0).Max();
        }

        _generations[key] = last + 1;
        return last + 1;
    }

    private async Task<long> UploadPacksAsync(TraceReader reader, List<BlobLocation> fresh, CancellationToken cancel)
    {
        var packs = new List<(byte[] Bytes, List<RemoteBlob> Records)>();
        using var pack = new MemoryStream();
        var records = new List<RemoteBlob>();
        var header = new byte[PackFormat.HeaderSize];
        PackFormat.WriteFileHeader(header);
        var buffer = new byte[PackFormat.RecordSize(Zstd.CompressBound(PackFormat.MaxRawLength))];
        foreach (var loc in fresh.OrderBy(l => l.PackId).ThenBy(l => l.Offset))
        {
            if (pack.Length == 0)
            {
                pack.Write(header);
            }

            // Only whole records are copied: a delta or a slice of a group is decoded and stored whole (a remote
            // blob never needs another).
            var record = loc.Codec is BlobCodec.Raw or BlobCodec.Zstd ? CopiedRecord(reader, loc, buffer) : WholeRecord(reader, loc, buffer);
            records.Add(new RemoteBlob(loc.Id, "", pack.Length, loc.RawLength,
                BinaryPrimitives.ReadInt32LittleEndian(record[12..]), (BlobCodec)record[4]));
            pack.Write(record);
            if (pack.Length >= MaxPackBytes)
            {
                packs.Add((pack.ToArray(), records));
                pack.SetLength(0);
                records = [];
            }
        }

        if (records.Count > 0)
        {
            packs.Add((pack.ToArray(), records));
        }

        long total = 0;
        await Parallel.ForEachAsync(packs, new ParallelOptions { MaxDegreeOfParallelism = 4, CancellationToken = cancel }, async (p, ct) =>
        {
            var sha = RemoteLayout.Sha(p.Bytes);
            var named = p.Records.Select(r => r with { Pack = sha }).ToList();
            await _store.PutAsync(RemoteLayout.Pack(sha), p.Bytes, createOnly: true, ct).ConfigureAwait(false);
            await _store.PutAsync(RemoteLayout.Index(sha), PackIndex.Encode(p.Bytes.Length, named), createOnly: true, ct).ConfigureAwait(false);
            lock (Summary)
            {
                Summary.Add(sha, p.Bytes.Length, named);
                total += p.Bytes.Length;
            }
        }).ConfigureAwait(false);
        return total;
    }

    /// <summary>A whole record as it is in the local pack, after its CRC and header were checked.</summary>
    private static ReadOnlySpan<byte> CopiedRecord(TraceReader reader, in BlobLocation loc, byte[] buffer)
    {
        reader.Packs.CheckFraming(loc);
        return reader.Packs.ReadRecord(loc, buffer);
    }

    /// <summary>A delta-coded blob or a slice decoded (and so verified) and stored whole: a remote blob never needs a base.</summary>
    private static ReadOnlySpan<byte> WholeRecord(TraceReader reader, in BlobLocation loc, byte[] buffer)
    {
        var raw = new byte[loc.RawLength];
        reader.Blobs.Read(loc, raw);
        var payload = buffer.AsSpan(PackFormat.RecordHeaderSize, Zstd.CompressBound(raw.Length));
        var stored = Zstd.Compress(raw, payload);
        var codec = BlobCodec.Zstd;
        if (stored >= raw.Length)
        {
            raw.CopyTo(payload);
            stored = raw.Length;
            codec = BlobCodec.Raw;
        }

        var record = buffer.AsSpan(0, PackFormat.RecordSize(stored));
        record[..PackFormat.RecordHeaderSize].Clear();
        BinaryPrimitives.WriteUInt32LittleEndian(record, PackFormat.RecordMagic);
        record[4] = (byte)codec;
        BinaryPrimitives.WriteInt32LittleEndian(record[8..], raw.Length);
        BinaryPrimitives.WriteInt32LittleEndian(record[12..], stored);
        loc.Id.Bytes.CopyTo(record[16..]);
        var crcAt = PackFormat.RecordHeaderSize + stored;
        BinaryPrimitives.WriteUInt32LittleEndian(record[crcAt..], Crc32C.Compute(record[..crcAt]));
        return record;
    }
}
