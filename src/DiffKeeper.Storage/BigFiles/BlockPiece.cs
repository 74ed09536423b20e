namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// One extent of a block extent map (docs/store-format.md, "Big files"): <see cref="Length"/> bytes at
/// <see cref="Offset"/>, inside one aligned block, stored as blob row <see cref="RowId"/> whose SHA-256 is <see cref="Id"/>.
/// </summary>
public readonly record struct BlockPiece(long Offset, int Length, long RowId, BlobId Id)
{
    public const int BlockSize = 64 * 1024;

    public long End => Offset + Length;

    public long Block => Offset / BlockSize;

    /// <summary>
    /// The piece's bytes' <see cref="BlockFingerprint"/> under the seed of the ingest that read them; 0: unknown. A
    /// cache of the bytes, not part of the piece's identity: equality ignores it.
    /// </summary>
    public UInt128 Fingerprint { get; init; }

    public bool Equals(BlockPiece other) => Offset == other.Offset && Length == other.Length && RowId == other.RowId && Id == other.Id;

    public override int GetHashCode() => HashCode.Combine(Offset, Length, RowId, Id);
}

/// <summary>What a block ingest stored: the version's content, its pieces (kept for the next version) and the work done.</summary>
public sealed record BlockIngestResult(IngestedContent Content, IReadOnlyList<BlockPiece> Pieces, long BytesRead, int PiecesChanged)
{
    /// <summary>Pieces read whose fingerprint equalled the previous version's piece at their offset: not SHA-256'd.</summary>
    public int PiecesByFingerprint { get; init; }
}
