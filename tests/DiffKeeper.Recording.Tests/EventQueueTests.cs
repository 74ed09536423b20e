using DiffKeeper.Capture;

namespace DiffKeeper.Recording.Tests;

/// <summary>`record`'s channel between the capture source and the consumer: order, completion, reused segments.</summary>
public sealed class EventQueueTests
{
    private static CaptureEvent Numbered(int i) => new(CaptureKind.Written, 0, "f" + i, null, false, i);

    [Fact]
    public void Events_come_out_in_order_across_segments_also_when_reading_and_writing_interleave()
    {
        // Reading half a backlog, then writing more, reuses read segments: nothing may be lost, repeated or reordered.
        var queue = new EventQueue();
        var written = 0;
        var read = new List<long>();
        void Write(int n)
        {
            for (var i = 0; i < n; i++)
            {
                Assert.True(queue.Writer.TryWrite(Numbered(written++)));
            }
        }

        void Read(int n)
        {
            for (var i = 0; i < n && queue.Reader.TryRead(out var e); i++)
            {
                read.Add(e.Timestamp);
            }
        }

        Write(EventQueue.SegmentSize * 3 + 7);
        Read(EventQueue.SegmentSize * 2 + 3);
        Write(EventQueue.SegmentSize * 5);
        Read(EventQueue.SegmentSize - 1);
        Write(1);
        Read(int.MaxValue);
        Assert.Equal(Enumerable.Range(0, written).Select(i => (long)i), read);
        Assert.False(queue.Reader.TryRead(out _));
        Assert.False(queue.Reader.TryPeek(out _));
    }

    [Fact]
    public void Peek_does_not_consume_and_completion_waits_for_the_last_event_to_be_read()
    {
        var queue = new EventQueue();
        Assert.True(queue.Writer.TryWrite(Numbered(1)));
        Assert.True(queue.Writer.TryWrite(Numbered(2)));
        Assert.True(queue.Writer.TryComplete());
        Assert.False(queue.Writer.TryWrite(Numbered(3)));
        Assert.False(queue.Writer.TryComplete());
        Assert.True(queue.Reader.TryPeek(out var peeked));
        Assert.Equal(1, peeked.Timestamp);
        Assert.True(queue.Reader.TryRead(out var first));
        Assert.Equal(1, first.Timestamp);
        Assert.False(queue.Reader.Completion.IsCompleted);
        Assert.True(queue.Reader.TryRead(out var second));
        Assert.Equal(2, second.Timestamp);
        Assert.True(queue.Reader.Completion.IsCompletedSuccessfully);
        Assert.False(queue.Reader.TryRead(out _));
    }

    [Fact]
    public void A_writer_completed_with_an_error_faults_the_completion_once_drained()
    {
        var queue = new EventQueue();
        Assert.True(queue.Writer.TryComplete(new IOException("source failed")));
        Assert.True(queue.Reader.Completion.IsFaulted);
        Assert.IsType<IOException>(queue.Reader.Completion.Exception!.InnerException);
    }
}
