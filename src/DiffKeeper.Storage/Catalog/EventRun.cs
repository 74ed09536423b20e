namespace DiffKeeper.Storage.Catalog;

/// <summary>One event of a write run: what differs between the writes of a run (docs/store-format.md, "Write runs").</summary>
public readonly record struct RunStep(long Seq, long TimeNs, long? Offset, long? Length, long? Size);

/// <summary>
/// The <c>events.run</c> encoding (format 7, docs/store-format.md, "Write runs"): consecutive WRITE events of one
/// process to one path stored as one row, the first event's columns plus varint deltas of the events that follow.
/// <see cref="Builder"/> writes one; <see cref="TryDecode"/> reads one of an untrusted trace and never reads past
/// its bytes or overflows.
/// </summary>
public static class EventRun
{
    /// <summary>Most events that may follow a run's first (a run is at most this + 1 events): readers look this far back.</summary>
    public const int MaxFollowers = 4095;

    /// <summary>Longest <c>run</c> value a decoder accepts: the count and four 10-byte varints per follower.</summary>
    public const int MaxBytes = 2 + (MaxFollowers * 4 * Varint.MaxLength);

    // A follower's offset, length and size stay within ±2^62, so the deltas the encoder takes never wrap (a kernel's
    // file offsets end at 2^63 - 1; such a write is stored as a row of its own).
    private const long Bound = 1L << 62;

    private static ulong ZigZag(long v) => (ulong)((v << 1) ^ (v >> 63));

    private static long UnZigZag(ulong v) => (long)(v >> 1) ^ -(long)(v & 1);

    /// <summary>
    /// Whether an event may start a run (it is stored as a plain row when nothing follows it): a WRITE with a path,
    /// no second path and no detail (a detail such as "read back" or "punch hole" says the write differs).
    /// </summary>
    public static bool CanStart(in NewEvent e) =>
        e.Op == Core.ChangeOp.Write && e.PathId is not null && e.Path2Id is null && e.Detail is null &&
        e.Offset is null or (>= 0 and <= Bound) && e.Length is null or (>= 0 and <= Bound) && e.Size is null or (>= -Bound and <= Bound);

    /// <summary>
    /// The run being built by a writer. Not thread-safe. <see cref="TryAppend"/> takes an event only when it extends the
    /// run by the rules of the format; the caller writes the row (<see cref="First"/>, <see cref="Encoded"/>) and
    /// starts another otherwise.
    /// </summary>
    public sealed class Builder
    {
        private byte[] _bytes = new byte[256];
        private int _length;
        private NewEvent _last;

        /// <summary>The session the run belongs to.</summary>
        public long SessionId { get; private set; }

        /// <summary>The run's first event, whose columns the row holds.</summary>
        public NewEvent First { get; private set; }

        /// <summary>How many events follow <see cref="First"/>.</summary>
        public int Followers { get; private set; }

        /// <summary>Starts a run at <paramref name="first"/> (which <see cref="CanStart"/> accepted).</summary>
        public void Start(long sessionId, in NewEvent first)
        {
            SessionId = sessionId;
            First = first;
            _last = first;
            Followers = 0;
            _length = 0;
        }

        /// <summary>Adds <paramref name="e"/> when it is the next event of the run; false (and nothing changed) otherwise.</summary>
        public bool TryAppend(long sessionId, in NewEvent e)
        {
            var f = First;
            if (sessionId != SessionId || Followers >= MaxFollowers || e.Seq != _last.Seq + 1 || e.TimeNs < _last.TimeNs ||
                e.Op != Core.ChangeOp.Write || e.PathId != f.PathId || e.Path2Id is not null || e.Detail is not null ||
                e.Pid != f.Pid || !string.Equals(e.Comm, f.Comm, StringComparison.Ordinal) ||
                e.Offset.HasValue != f.Offset.HasValue || e.Length.HasValue != f.Length.HasValue || e.Size.HasValue != f.Size.HasValue ||
                e.Offset is < 0 or > Bound || e.Length is < 0 or > Bound || e.Size is < -Bound or > Bound)
            {
                return false;
            }

            if (_bytes.Length - _length < 4 * Varint.MaxLength)
            {
                Array.Resize(ref _bytes, _bytes.Length * 2);
            }

            var span = _bytes.AsSpan();
            var n = _length;
            n += Varint.Write(span[n..], (ulong)(e.TimeNs - _last.TimeNs));
            if (e.Offset is { } offset)
            {
                n += Varint.Write(span[n..], ZigZag(offset - (_last.Offset!.Value + (_last.Length ?? 0))));
            }

            if (e.Length is { } length)
            {
                n += Varint.Write(span[n..], (ulong)length);
            }

            if (e.Size is { } size)
            {
                n += Varint.Write(span[n..], ZigZag(size - _last.Size!.Value));
            }

            _length = n;
            _last = e;
            Followers++;
            return true;
        }

        /// <summary>The <c>run</c> column's bytes: the count, then the followers' deltas.</summary>
        public byte[] Encoded()
        {
            Span<byte> count = stackalloc byte[Varint.MaxLength];
            var k = Varint.Write(count, (ulong)Followers);
            var run = new byte[k + _length];
            count[..k].CopyTo(run);
            _bytes.AsSpan(0, _length).CopyTo(run.AsSpan(k));
            return run;
        }
    }

    /// <summary>The count of events that follow the row's first, without decoding them; null when it is out of range.</summary>
    public static int? Followers(ReadOnlySpan<byte> run)
    {
        var at = 0;
        return Varint.TryRead(run, ref at, out var n) && n is >= 1 and <= MaxFollowers ? (int)n : null;
    }

    /// <summary>
    /// Decodes the events that follow <paramref name="first"/> (the row's own event, its NULL columns saying which
    /// fields the run has) into <paramref name="into"/> (cleared first). False with <paramref name="error"/> saying
    /// what is wrong (for the one-line damage message) when the bytes do not decode exactly as the format says.
    /// </summary>
    public static bool TryDecode(ReadOnlySpan<byte> run, RunStep first, List<RunStep> into, out string? error)
    {
        into.Clear();
        var at = 0;
        if (!Varint.TryRead(run, ref at, out var count) || count is < 1 or > MaxFollowers)
        {
            error = $"its write run does not start with a count 1 to {MaxFollowers}";
            return false;
        }

        if (first.Seq > long.MaxValue - (long)count)
        {
            error = "its write run's seq numbers pass 2^63";
            return false;
        }

        var last = first;
        for (var i = 1; i <= (int)count; i++)
        {
            if (!Varint.TryRead(run, ref at, out var dt) || dt > long.MaxValue || last.TimeNs > long.MaxValue - (long)dt)
            {
                error = $"its write run is damaged at event {i} (time)";
                return false;
            }

            long? offset = null, length = null, size = null;
            if (first.Offset is not null)
            {
                var end = (Int128)last.Offset!.Value + (last.Length ?? 0);
                if (!Varint.TryRead(run, ref at, out var z) || end + UnZigZag(z) is var o && (o < 0 || o > long.MaxValue))
                {
                    error = $"its write run is damaged at event {i} (offset)";
                    return false;
                }

                offset = (long)(end + UnZigZag(z));
            }

            if (first.Length is not null)
            {
                if (!Varint.TryRead(run, ref at, out var l) || l > long.MaxValue)
                {
                    error = $"its write run is damaged at event {i} (length)";
                    return false;
                }

                length = (long)l;
            }

            if (first.Size is not null)
            {
                if (!Varint.TryRead(run, ref at, out var z) || (Int128)last.Size!.Value + UnZigZag(z) is var s && (s < long.MinValue || s > long.MaxValue))
                {
                    error = $"its write run is damaged at event {i} (size)";
                    return false;
                }

                size = last.Size!.Value + UnZigZag(z);
            }

            last = new RunStep(last.Seq + 1, last.TimeNs + (long)dt, offset, length, size);
            into.Add(last);
        }

        if (at != run.Length)
        {
            error = $"its write run has {run.Length - at} bytes after its last event";
            return false;
        }

        error = null;
        return true;
    }

    /// <summary>
    /// The <c>run</c> value of a run cut to its first <paramref name="keep"/> followers (null when none is kept), from a
    /// value that decodes. Each follower's deltas are relative to the one before it, so the kept prefix is unchanged.
    /// </summary>
    public static byte[]? Cut(ReadOnlySpan<byte> run, RunStep first, int keep)
    {
        if (keep <= 0)
        {
            return null;
        }

        var at = 0;
        Varint.TryRead(run, ref at, out _);
        var fields = 1 + (first.Offset is null ? 0 : 1) + (first.Length is null ? 0 : 1) + (first.Size is null ? 0 : 1);
        var start = at;
        for (var i = 0; i < keep * fields; i++)
        {
            if (!Varint.TryRead(run, ref at, out _))
            {
                throw new InvalidOperationException("a write run to cut does not decode");
            }
        }

        Span<byte> count = stackalloc byte[Varint.MaxLength];
        var k = Varint.Write(count, (ulong)keep);
        var cut = new byte[k + at - start];
        count[..k].CopyTo(cut);
        run[start..at].CopyTo(cut.AsSpan(k));
        return cut;
    }
}
