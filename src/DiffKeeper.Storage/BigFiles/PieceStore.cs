namespace DiffKeeper.Storage.BigFiles;

/// <summary>
/// Stores the new pieces of a block ingest. A piece of at least <see cref="GroupBelow"/> bytes is a blob of its
/// own, as any chunk; smaller ones (the scattered pages of a sparse image: W5 stores 16,384 pieces of 4 KiB) go to
/// the writer's group (<see cref="TraceWriter.TryGroup"/>, docs/store-format.md "Big files"), so a page costs its
/// slice row and no 84-byte record of its own. A slice reads as a whole blob does (its group decoded up to its end,
/// at most 1 MiB, and kept in the reader's cache), so every version still rebuilds without a chain.
/// </summary>
internal static class PieceStore
{
    /// <summary>Pieces shorter than this are grouped: the record header (84 bytes) is over 0.5% of them.</summary>
    public const int GroupBelow = 16 << 10;

    /// <summary>
    /// Stores the pieces of <paramref name="buffer"/> that <paramref name="batch"/> names, already hashed into
    /// <paramref name="ids"/> (deduplicated by SHA-256, as <see cref="FileIngest"/> does); returns each one's row.
    /// </summary>
    /// <param name="encoded">Per piece, its encoding when the caller made it already (no buffer: encoded here).</param>
    public static List<(long RowId, BlobId Id, int Length)> Store(TraceWriter writer, byte[] buffer, List<(int Offset, int Length)> batch, BlobId[] ids,
        FileIngest.Encoded[]? encoded = null) =>
        FileIngest.StoreBatch(writer, buffer, batch, ids, parallel: true, groupBelow: GroupBelow, encoded: encoded); // one catalog lookup per piece
}
