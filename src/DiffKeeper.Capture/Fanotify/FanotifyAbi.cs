namespace DiffKeeper.Capture.Fanotify;

/// <summary>The fanotify(7) ABI values both fanotify users here need (the source and the write witness).</summary>
internal static class FanotifyAbi
{
    public const uint FAN_CLOEXEC = 0x1;
    public const uint FAN_NONBLOCK = 0x2;
    public const uint FAN_MARK_ADD = 0x1;
    public const ulong FAN_MODIFY = 0x2;
    public const ulong FAN_CLOSE_WRITE = 0x8;
    public const ulong FAN_Q_OVERFLOW = 0x4000;
    public const int O_LARGEFILE = 0x8000;

    /// <summary>sizeof(struct fanotify_event_metadata).</summary>
    public const int MetadataSize = 24;
}
