using System.Threading.Channels;

namespace DiffKeeper.Capture;

/// <summary>
/// A capture backend. Contract:
/// <list type="bullet">
/// <item><see cref="Start"/> returns only once every root is watched, so a change made after it returns is
/// observed (the baseline scan runs after it and the recorded command starts after that).</item>
/// <item>Events of one path arrive in the order the kernel reported them; a directory's Created arrives before
/// events of its contents.</item>
/// <item>Nothing is dropped silently: when the backend loses events it emits <see cref="CaptureKind.Overflow"/>.</item>
/// <item><see cref="StopAsync"/> delivers every event observed before it was called, then stops writing.
/// The source never completes the channel; its owner does.</item>
/// <item>Paths under an excluded path (the trace directory, --exclude) are neither watched nor reported.</item>
/// </list>
/// </summary>
public interface ICaptureSource : IAsyncDisposable
{
    /// <summary>Short backend name stored with the session ("inotify", "ebpf", ...).</summary>
    string Name { get; }

    /// <summary>
    /// True when every namespace change (create, rename, delete) of the recorded process tree arrives as its own
    /// event, in order, under the names it had at that moment (eBPF). False when names are resolved when an event
    /// is read, or events of one name may merge: then a renamed name's state must be checked by reading it.
    /// </summary>
    bool ReportsExactNames { get; }

    /// <summary>
    /// True when the source follows the recorded process tree wherever it writes instead of watching the roots, so
    /// a root of "/" needs no baseline walk: what the tree touches is recorded.
    /// </summary>
    bool FollowsProcessTree { get; }

    /// <summary>
    /// True when <see cref="DrainToNowAsync"/> works: the source can deliver, on request, every event the kernel
    /// produced before the request (eBPF: the ring buffer consumed to empty; fanotify: its queue read until empty;
    /// scan: none are ever produced). False for inotify, whose reader mutes hot files and holds moves: its owner
    /// proves order with a barrier file instead (docs/architecture.md, keep mode).
    /// </summary>
    bool DrainsToNow { get; }

    /// <summary>
    /// Completes once every event the kernel produced before this call has been written to the sink (the reader
    /// goes on afterwards). With the writers stopped (a freeze cut), what the sink holds then is everything they did.
    /// Throws <see cref="NotSupportedException"/> when <see cref="DrainsToNow"/> is false.
    /// </summary>
    Task DrainToNowAsync();

    /// <summary>
    /// For a source whose write events carry every written range of the recorded tree (eBPF): how many ways of
    /// writing that produce no event the tree has opened so far (shared writable mappings, io_uring, AIO); 0 while
    /// its write events are all its writes. Null for every other source, whose events carry no ranges.
    /// </summary>
    ulong? UnseenWriters => null;

    /// <summary>
    /// Whether the process <paramref name="pid"/> (a thread group id) is in the recorded tree now, as the source
    /// follows it (eBPF's map of tracked processes: a process leaves it when it exits); false for sources that do not
    /// follow a tree, and for the recorder itself.
    /// </summary>
    bool InTree(int pid) => false;

    /// <summary>Starts watching; events go to <paramref name="sink"/>.</summary>
    void Start(ChannelWriter<CaptureEvent> sink);

    /// <summary>Drains what the kernel has queued, then stops.</summary>
    Task StopAsync();
}
