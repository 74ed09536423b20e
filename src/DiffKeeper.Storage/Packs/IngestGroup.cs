namespace DiffKeeper.Storage.Packs;

/// <summary>
/// The group a writer fills while recording (docs/store-format.md, "Groups written while recording"): the raw bytes
/// of the small blobs stored since the last commit, back to back, each blob a slice of them. A blob that begins with
/// the bytes of the one added just before it (the next state of a file being appended to: its tail chunk, longer)
/// does not add them again: it is a slice from the same start, and only its new bytes are added. So a burst of
/// appends stores each byte once, however many exact versions it makes.
/// </summary>
internal sealed class IngestGroup(long row, byte[] buffer)
{
    /// <summary>Bytes a group may give its members: the rest of <see cref="PackFormat.MaxGroupLength"/> is for the
    /// trailer a group whose bytes equal a blob's gets (<see cref="TrailerLength"/>).</summary>
    public const int Capacity = PackFormat.MaxGroupLength - TrailerLength;

    /// <summary>
    /// Random bytes after the members' when the members' bytes alone equal some blob's (a chain of appends whose
    /// longest state is all of them, or a file equal to two others concatenated): blob ids are unique, and a group
    /// is a blob. No slice names them.
    /// </summary>
    public const int TrailerLength = 16;

    /// <summary>A buffer for a group: <see cref="PackFormat.MaxGroupLength"/> bytes, their contents unspecified.</summary>
    public static byte[] NewBuffer() => GC.AllocateUninitializedArray<byte>(PackFormat.MaxGroupLength);

    // Only the bytes the members were copied to are read: a buffer used by an earlier group may be given again.
    private readonly byte[] _raw = buffer.Length == PackFormat.MaxGroupLength ? buffer : throw new ArgumentException("a group buffer has MaxGroupLength bytes", nameof(buffer));
    private int _lastStart = -1;
    private int _lastLength;

    // The members' rows in the order added; those from _chainFrom on start at _lastStart: one file's states while
    // it grows (the chain).
    private readonly List<long> _rows = [];
    private readonly List<BlobId> _ids = [];
    private int _chainFrom;

    /// <summary>The group's catalog row: added with the first member, its record written by the commit.</summary>
    public long Row { get; } = row;

    /// <summary><c>blobs.bases</c> of every member (the group's row), encoded once for all of them.</summary>
    public byte[] Bases { get; } = PackFormat.EncodeBases([row]);

    public int Length { get; private set; }

    public int Members => _rows.Count;

    /// <summary>The row of the first member (the one to store whole again when it stays alone).</summary>
    public long FirstMember => _rows[0];

    /// <summary>The first member's blob id (no need to hash it again when it is stored whole).</summary>
    public BlobId FirstId => _ids[0];

    public Span<byte> Raw => _raw;

    /// <summary>The buffer, for the next group once this one is written.</summary>
    public byte[] Buffer => _raw;

    /// <summary>
    /// Where <paramref name="data"/> would start if it extends the last member (starts with all its bytes, ends
    /// within <see cref="Capacity"/>), or -1.
    /// </summary>
    public int Extends(ReadOnlySpan<byte> data)
    {
        if (_lastStart < 0 || data.Length <= _lastLength || _lastStart + data.Length > Capacity ||
            !data[.._lastLength].SequenceEqual(_raw.AsSpan(_lastStart, _lastLength)))
        {
            return -1;
        }

        return _lastStart;
    }

    /// <summary>Whether <paramref name="length"/> bytes fit after the members already added.</summary>
    public bool Fits(int length) => Length + length <= Capacity;

    /// <summary>
    /// Adds a member: as the last one grown when <paramref name="extendsLast"/> (what <see cref="Extends"/> just found:
    /// its bytes are not compared twice), else after the others (<see cref="Fits"/> said it fits). Returns where its
    /// bytes start.
    /// </summary>
    public int Add(ReadOnlySpan<byte> data, bool extendsLast)
    {
        int start;
        if (extendsLast)
        {
            start = _lastStart;
            data[_lastLength..].CopyTo(_raw.AsSpan(Length));
        }
        else
        {
            start = Length;
            data.CopyTo(_raw.AsSpan(start));
            _chainFrom = _rows.Count;
        }

        Length = start + data.Length;
        _lastStart = start;
        _lastLength = data.Length;
        return start;
    }

    /// <summary>Notes the row and id of the member <see cref="Add"/> just added.</summary>
    public void Added(long row, BlobId id)
    {
        _rows.Add(row);
        _ids.Add(id);
    }

    /// <summary>
    /// Whether <paramref name="data"/> (a blob already stored, which a file's next state turned out to be) extends the
    /// last chain: then the chain's members are prefixes of it, and may be slices of wherever it lies instead.
    /// </summary>
    public bool ChainExtendedBy(ReadOnlySpan<byte> data) => _chainFrom < _rows.Count && Extends(data) >= 0;

    /// <summary>Takes the last chain off the group (its bytes were the last added) and returns its member rows.</summary>
    public List<long> TakeChain()
    {
        var rows = _rows.GetRange(_chainFrom, _rows.Count - _chainFrom);
        _rows.RemoveRange(_chainFrom, rows.Count);
        _ids.RemoveRange(_chainFrom, rows.Count);
        Length = _lastStart;
        _lastStart = -1;
        _lastLength = 0;
        return rows;
    }

    /// <summary>Appends the trailer (random bytes no slice names).</summary>
    public void AddTrailer()
    {
        System.Security.Cryptography.RandomNumberGenerator.Fill(_raw.AsSpan(Length, TrailerLength));
        Length += TrailerLength;
    }
}
