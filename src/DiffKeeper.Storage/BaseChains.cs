using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// The writer's view of committed blobs as delta bases (docs/store-format.md, "Deltas written while recording"):
/// what decoding a blob row costs (its rebuild cost and delta depth, read from the catalog through the writer's own
/// connection) and its bytes. Only rows no open transaction touched are bases: their records are in packs and
/// synced. Locations and decoded groups are cached for one baseline; a row maintenance moved meanwhile reads as
/// damaged (the pack record's header and the SHA-256 of the bytes are checked as for any read), and the caller then
/// stores its blob without a delta. Single-threaded, like the writer.
/// </summary>
internal sealed class BaseChains : IDisposable
{
    private readonly SqliteStatement _blobRow;
    private readonly string _traceDir;
    private PackReader? _packs;
    private BlobReader? _reader;

    public BaseChains(SqliteDatabase db, string traceDir)
    {
        _traceDir = traceDir;
        _blobRow = db.Prepare("SELECT hash, pack_id, offset, raw_len, stored_len, codec, bases FROM blobs WHERE id = ?1");
    }

    /// <summary>
    /// Where blob row <paramref name="row"/> is, or null when the catalog has no such row or a malformed one. Looked
    /// up once per baseline (the files of a tree share their groups); a row moved since reads as damaged.
    /// </summary>
    public BlobLocation? Location(long row)
    {
        if (_locations.TryGetValue(row, out var known))
        {
            return known;
        }

        var r = _blobRow.Bind(1, row);
        try
        {
            BlobLocation? found = null;
            if (r.Step() && r.BlobOrNull(0) is { Length: 32 } hash)
            {
                long[] bases = r.BlobOrNull(6) is { } encoded ? PackFormat.DecodeBases(encoded) ?? [-1] : [];
                found = new BlobLocation(row, new BlobId(hash), r.Int64(1), r.Int64(2), r.Int32(3), r.Int32(4), (BlobCodec)r.Int32(5), bases);
            }

            _locations[row] = found;
            return found;
        }
        finally
        {
            r.Reset();
        }
    }

    private readonly Dictionary<long, BlobLocation?> _locations = [];

    /// <summary>
    /// What decoding <paramref name="row"/> costs: the raw bytes of every row it decodes, each once (a slice counts
    /// its group's whole raw length, as compaction does), and the longest delta chain it follows (0 for a whole
    /// blob or a slice). Null when a row of that closure is one <paramref name="uncommitted"/> holds, is missing or
    /// malformed, or when the closure is longer than a reader may follow.
    /// </summary>
    public (long Cost, int Depth)? Chain(long row, IReadOnlySet<long> uncommitted)
    {
        long cost = 0;
        var deepest = 0;
        var seen = new HashSet<long>();
        var stack = new Stack<(long Row, int Depth)>();
        stack.Push((row, 0));
        while (stack.TryPop(out var at))
        {
            if (!seen.Add(at.Row))
            {
                continue;
            }

            if (seen.Count > PackFormat.MaxDepth || uncommitted.Contains(at.Row) || Location(at.Row) is not { } loc || loc.Bases.Contains(-1))
            {
                return null;
            }

            deepest = Math.Max(deepest, at.Depth);
            if (loc.IsSlice)
            {
                stack.Push((loc.Bases.Length == 1 ? loc.Bases[0] : -1, at.Depth)); // its group holds its bytes
                continue;
            }

            cost += loc.RawLength;
            foreach (var b in loc.Bases)
            {
                stack.Push((b, at.Depth + 1));
            }
        }

        return (cost, deepest);
    }

    /// <summary>The bytes of <paramref name="loc"/>, checked; null when they cannot be read as the catalog says.</summary>
    public byte[]? Read(in BlobLocation loc)
    {
        _packs ??= new PackReader(_traceDir);
        _reader ??= new BlobReader(row => Location(row) ?? throw new BlobMissingException(row), _packs, wholeGroups: true);
        var bytes = new byte[loc.RawLength];
        try
        {
            _reader.Read(loc, bytes);
            return bytes;
        }
        catch (Exception e) when (e is BlobDamagedException or BlobMissingException or IOException)
        {
            Forget(); // maybe a location cached before maintenance moved the row: look everything up again
            return null;
        }
    }

    /// <summary>Drops the cached locations and decoded bases (at the end of a baseline).</summary>
    public void Forget()
    {
        _locations.Clear();
        _reader = null;
        _packs?.Dispose();
        _packs = null;
    }

    public void Dispose()
    {
        Forget();
        _blobRow.Dispose();
    }
}
