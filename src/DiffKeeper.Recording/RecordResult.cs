namespace DiffKeeper.Recording;

/// <summary>
/// What a recording did: the command's exit code (128+N when killed by signal N) and counts; the trace's pack bytes
/// before and after the compaction that followed the session (null when it did not run: `--no-compact`, a failure).
/// </summary>
public sealed record RecordResult(long SessionId, int ExitCode, long Events, long Versions, long LostEvents, long RawBytes, long StoredBytes)
{
    public long? PackBytesBefore { get; init; }

    public long? PackBytesAfter { get; init; }

    /// <summary>Bytes read by versions of big files (above `--big-file`): data extents, or only written blocks.</summary>
    public long BigFileBytesRead { get; init; }

    /// <summary>Versions of big files read from the blocks the tree's write events touched alone (eBPF).</summary>
    public long BigFileVersionsFromWrites { get; init; }
}
