using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Fuzz;

/// <summary>
/// The write run decoder (events.run, store format 7) as readers call it. Input: one byte saying which columns the
/// row has (bit 0 offset, bit 1 length, bit 2 size), then the run. A run it accepts must give consecutive seqs,
/// non-decreasing times, offsets and lengths of at least 0, survive encoding and decoding again, and cut to its prefix.
/// </summary>
public sealed class EventRunTarget : FuzzTarget
{
    public static byte[] Input(int columns, ReadOnlySpan<byte> run) => [(byte)columns, .. run];

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        if (input.Length < 1)
        {
            return;
        }

        var first = new RunStep(1, 1000, (input[0] & 1) != 0 ? 4096 : null, (input[0] & 2) != 0 ? 16 : null, (input[0] & 4) != 0 ? 4112 : null);
        var steps = new List<RunStep>();
        if (!EventRun.TryDecode(input[1..], first, steps, out _))
        {
            return;
        }

        var builder = new EventRun.Builder();
        builder.Start(1, new NewEvent(first.Seq, first.TimeNs, ChangeOp.Write, 1, null, first.Size, 7, "w", null, first.Offset, first.Length));
        var last = first;
        foreach (var s in steps)
        {
            if (s.Seq != last.Seq + 1 || s.TimeNs < last.TimeNs || s.Offset < 0 || s.Length < 0 ||
                s.Offset.HasValue != first.Offset.HasValue || s.Length.HasValue != first.Length.HasValue || s.Size.HasValue != first.Size.HasValue)
            {
                throw new InvalidOperationException($"decoded an impossible event {s} after {last}");
            }

            if (!builder.TryAppend(1, new NewEvent(s.Seq, s.TimeNs, ChangeOp.Write, 1, null, s.Size, 7, "w", null, s.Offset, s.Length)))
            {
                throw new InvalidOperationException($"a decoded event {s} does not extend its run");
            }

            last = s;
        }

        var again = new List<RunStep>();
        if (!EventRun.TryDecode(builder.Encoded(), first, again, out var error) || !again.SequenceEqual(steps))
        {
            throw new InvalidOperationException($"a decoded run does not survive encoding and decoding again ({error})");
        }

        var keep = steps.Count / 2;
        if (EventRun.Cut(input[1..], first, keep) is { } cut && (!EventRun.TryDecode(cut, first, again, out error) || !again.SequenceEqual(steps.Take(keep))))
        {
            throw new InvalidOperationException($"a run cut to {keep} events does not decode to its prefix ({error})");
        }
    }
}
