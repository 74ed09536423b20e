namespace DiffKeeper.Core;

/// <summary>
/// An anticipated failure: the message is one sentence that tells the user what happened and what to do, and the
/// CLI prints it on one line and exits with <see cref="Code"/>. Unexpected failures use other exception types.
/// </summary>
public sealed class DiffKeeperException : Exception
{
    public DiffKeeperException(ExitCode code, string message, Exception? inner = null)
        : base(message, inner) => Code = code;

    public ExitCode Code { get; }

    /// <summary>The trace-relative path involved, when there is one.</summary>
    public string? Path { get; init; }
}
