using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;
using DiffKeeper.Capture;

namespace DiffKeeper.Recording;

/// <summary>
/// The unbounded channel between a capture source and `record`'s consumer: events in order, in segments of
/// <see cref="SegmentSize"/> that are reused once read. The channel of System.Threading.Channels allocates each
/// segment anew, doubling, and drops it when read: while the recorder lagged 20,000 creates (a backlog of tens of
/// thousands of ~160-byte events) that was ~19 MB of large objects on the source's thread, and the large-object
/// heap's budget is what triggers the full collections of a recording. Segments here stay below the large-object
/// threshold and at most <see cref="MaxSpares"/> are kept for reuse.
/// <para>
/// Contract: any number of writers and readers (one lock); never blocks a writer (unbounded). The consumer waits on
/// <see cref="WakingChannelWriter"/>, not on the reader: <see cref="ChannelReader{T}.WaitToReadAsync"/> is not
/// supported. <see cref="ChannelReader{T}.Completion"/> completes once the writer completed and every event was read.
/// </para>
/// </summary>
internal sealed class EventQueue : Channel<CaptureEvent>
{
    /// <summary>Events per segment: 256 × ~160 B stays below the 85,000 B of the large-object heap.</summary>
    public const int SegmentSize = 256;

    /// <summary>Read segments kept for reuse (~4 MB); beyond them a drained backlog's segments are left to the GC.</summary>
    public const int MaxSpares = 96;

    private readonly Lock _gate = new();
    private readonly Stack<Segment> _spares = new();
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Segment _head;
    private Segment _tail;
    private bool _writerDone;
    private Exception? _error;

    public EventQueue()
    {
        _head = _tail = new Segment();
        Reader = new QueueReader(this);
        Writer = new QueueWriter(this);
    }

    private bool TryWrite(in CaptureEvent item)
    {
        lock (_gate)
        {
            if (_writerDone)
            {
                return false;
            }

            if (_tail.WriteAt == SegmentSize)
            {
                var next = _spares.Count > 0 ? _spares.Pop() : new Segment();
                _tail.Next = next;
                _tail = next;
            }

            _tail.Items[_tail.WriteAt++] = item;
            return true;
        }
    }

    private bool TryComplete(Exception? error)
    {
        lock (_gate)
        {
            if (_writerDone)
            {
                return false;
            }

            _writerDone = true;
            _error = error;
            CompleteIfDrained();
            return true;
        }
    }

    private bool TryRead(bool take, [MaybeNullWhen(false)] out CaptureEvent item)
    {
        lock (_gate)
        {
            if (_head.ReadAt == _head.WriteAt && _head.Next is { } next && _head.WriteAt == SegmentSize)
            {
                var read = _head;
                _head = next;
                read.Reset();
                if (_spares.Count < MaxSpares)
                {
                    _spares.Push(read);
                }
            }

            if (_head.ReadAt == _head.WriteAt)
            {
                item = default;
                return false;
            }

            item = _head.Items[_head.ReadAt];
            if (take)
            {
                _head.Items[_head.ReadAt++] = default; // nothing read stays reachable from the queue
                CompleteIfDrained();
            }

            return true;
        }
    }

    private void CompleteIfDrained()
    {
        if (_writerDone && _head.ReadAt == _head.WriteAt && _head.Next is null)
        {
            if (_error is { } error)
            {
                _completion.TrySetException(error);
            }
            else
            {
                _completion.TrySetResult();
            }
        }
    }

    private sealed class Segment
    {
        public readonly CaptureEvent[] Items = new CaptureEvent[SegmentSize];
        public int ReadAt;
        public int WriteAt;
        public Segment? Next;

        public void Reset() => (ReadAt, WriteAt, Next) = (0, 0, null);
    }

    private sealed class QueueReader(EventQueue queue) : ChannelReader<CaptureEvent>
    {
        public override Task Completion => queue._completion.Task;

        public override bool TryRead([MaybeNullWhen(false)] out CaptureEvent item) => queue.TryRead(take: true, out item);

        public override bool TryPeek([MaybeNullWhen(false)] out CaptureEvent item) => queue.TryRead(take: false, out item);

        public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default) =>
            throw new NotSupportedException("the recorder's consumer waits on WakingChannelWriter");
    }

    private sealed class QueueWriter(EventQueue queue) : ChannelWriter<CaptureEvent>
    {
        public override bool TryWrite(CaptureEvent item) => queue.TryWrite(item);

        public override bool TryComplete(Exception? error = null) => queue.TryComplete(error);

        public override ValueTask<bool> WaitToWriteAsync(CancellationToken cancellationToken = default)
        {
            lock (queue._gate)
            {
                return new ValueTask<bool>(!queue._writerDone);
            }
        }
    }
}
