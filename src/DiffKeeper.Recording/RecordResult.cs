namespace DiffKeeper.Recording;

/// <summary>What a recording did: the command's exit code (128+N when killed by signal N) and counts.</summary>
public sealed record RecordResult(long SessionId, int ExitCode, long Events, long Versions, long LostEvents, long RawBytes, long StoredBytes);
