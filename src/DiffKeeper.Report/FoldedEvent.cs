using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Report;

/// <summary>
/// One timeline line: an event, or a burst of <see cref="Count"/> consecutive writes by one process to one file
/// (<see cref="First"/> to <see cref="Last"/>; the size is the file's after the last).
/// </summary>
public sealed record FoldedEvent(EventRecord First, EventRecord Last, int Count)
{
    /// <summary>
    /// The bytes the line's writes wrote, summed, when every one of them has a length (an exact backend); null when
    /// any length is unknown (inotify, fanotify, a catalog before format 4): never a guess.
    /// </summary>
    public long? Bytes { get; init; } = First == Last ? First.Length : null;

    /// <summary>Writes further apart than this are separate lines: a pause is worth seeing.</summary>
    public const long MaxGapNs = 100_000_000;

    public bool IsBurst => Count > 1;

    /// <summary>
    /// Folds runs of consecutive <see cref="ChangeOp.Write"/> events with the same path, pid, program and detail (a
    /// punched hole or an fallocate is not a write of its length, and a line shows one detail), each less than
    /// <see cref="MaxGapNs"/> after the one before. Only neighbours fold, so the order of the lines is the order
    /// of the events; a write of another file in between, or a pause, starts a new line.
    /// </summary>
    public static IEnumerable<FoldedEvent> Fold(IEnumerable<EventRecord> events)
    {
        FoldedEvent? open = null;
        foreach (var e in events)
        {
            if (open is not null && e.Op == ChangeOp.Write && open.Last.Op == ChangeOp.Write &&
                e.Path == open.Last.Path && e.Pid == open.Last.Pid && e.Comm == open.Last.Comm && e.Detail == open.Last.Detail &&
                e.TimeNs - open.Last.TimeNs < MaxGapNs)
            {
                open = open with { Last = e, Count = open.Count + 1, Bytes = open.Bytes + e.Length };
                continue;
            }

            if (open is not null)
            {
                yield return open;
            }

            open = new FoldedEvent(e, e, 1);
        }

        if (open is not null)
        {
            yield return open;
        }
    }

    /// <summary>Each event as a line of its own.</summary>
    public static IEnumerable<FoldedEvent> Each(IEnumerable<EventRecord> events) => events.Select(e => new FoldedEvent(e, e, 1));
}
