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
}

/// <summary>What a block ingest stored: the version's content, its pieces (kept for the next version) and the work done.</summary>
public sealed record BlockIngestResult(IngestedContent Content, IReadOnlyList<BlockPiece> Pieces, long BytesRead, int PiecesChanged);
