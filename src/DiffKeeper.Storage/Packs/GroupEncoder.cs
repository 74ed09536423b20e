using DiffKeeper.Storage.Codecs;

namespace DiffKeeper.Storage.Packs;

/// <summary>
/// Hashes and compresses the ingest groups a writer closed (<see cref="IngestGroup"/>) on a thread of its own, beside
/// the writer's: while recording, an untar's groups (~130 MB of tails at zstd level 3, and their SHA-256) were a
/// fifth of the recorder thread's time while the second core idled. Contract: groups are given and taken back in the
/// same order, by one thread (the writer's); a group given is not touched by the caller until it is taken back; its
/// bytes are read, never written, here. <see cref="Take"/> with wait encodes on the caller's thread the groups the
/// thread has not begun, then blocks until the oldest group is done. The thread starts
/// with the first group given (a recording that closes none never starts it) and ends at <see cref="Dispose"/>.
/// </summary>
internal sealed class GroupEncoder : IDisposable
{
    /// <summary>A closed group, its id (SHA-256 of its bytes) and its record's payload (zstd at <paramref name="Level"/>).</summary>
    internal sealed class Encoded(IngestGroup group, int level)
    {
        public IngestGroup Group { get; } = group;

        public int Level { get; } = level;

        public BlobId Id { get; private set; }

        /// <summary>Pooled (<see cref="System.Buffers.ArrayPool{T}.Shared"/>): the taker returns it.</summary>
        public byte[] Payload { get; private set; } = [];

        public int PayloadLength { get; private set; }

        /// <summary>0 queued, 1 being encoded, 2 done; changed under the encoder's lock.</summary>
        public int State { get; set; }

        public bool Done => State == 2;

        /// <summary>Hashes and compresses the group's bytes, on whichever thread calls it.</summary>
        public void Run()
        {
            var raw = Group.Raw[..Group.Length];
            Id = BlobId.Of(raw);
            Payload = System.Buffers.ArrayPool<byte>.Shared.Rent(Zstd.CompressBound(raw.Length));
            PayloadLength = Zstd.Compress(raw, Payload, Level);
        }
    }

    private readonly Queue<Encoded> _queue = new();
    private Thread? _thread;
    private bool _stopping;
    private Exception? _failure;

    /// <summary>Groups given and not yet taken back.</summary>
    public int Count
    {
        get
        {
            lock (_queue)
            {
                return _queue.Count;
            }
        }
    }

    /// <summary>Queues a group for the thread to encode.</summary>
    public void Give(IngestGroup group, int level)
    {
        lock (_queue)
        {
            _queue.Enqueue(new Encoded(group, level));
            Monitor.PulseAll(_queue);
        }

        if (_thread is null)
        {
            _thread = new Thread(Work) { IsBackground = true, Name = "group encoder" };
            _thread.Start();
        }
    }

    /// <summary>Queues a group the caller encoded itself (it is behind the others: the order stays).</summary>
    public void GiveDone(Encoded encoded)
    {
        lock (_queue)
        {
            encoded.State = 2;
            _queue.Enqueue(encoded);
        }
    }

    /// <summary>The oldest group if it is done (<paramref name="wait"/>: waits until it is); null when none is queued, or it is not done and not waited for.</summary>
    public Encoded? Take(bool wait)
    {
        lock (_queue)
        {
            while (true)
            {
                if (_failure is { } failure)
                {
                    throw new InvalidOperationException("a group could not be encoded", failure);
                }

                if (_queue.Count == 0)
                {
                    return null;
                }

                var head = _queue.Peek();
                if (head.Done)
                {
                    _queue.Dequeue();
                    return head;
                }

                if (!wait)
                {
                    return null;
                }

                if (NextQueued(out var mine))
                {
                    // Waited for: what the thread has not begun is encoded here (on a busy machine the thread may
                    // get no core for a while; this one has one now).
                    Monitor.Exit(_queue);
                    Exception? failed = null;
                    try
                    {
                        mine!.Run();
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        failed = e;
                    }
                    finally
                    {
                        Monitor.Enter(_queue);
                    }

                    if (failed is not null)
                    {
                        _failure = failed; // as if the thread had failed: Discard does not wait for this group
                        continue;
                    }

                    mine!.State = 2;
                    Monitor.PulseAll(_queue);
                    continue;
                }

                Monitor.Wait(_queue);
            }
        }
    }

    private void Work()
    {
        while (true)
        {
            Encoded? item = null;
            lock (_queue)
            {
                while (!_stopping && !NextQueued(out item))
                {
                    Monitor.Wait(_queue);
                }

                if (_stopping)
                {
                    return;
                }
            }

            try
            {
                item!.Run();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                lock (_queue)
                {
                    _failure = e;
                    Monitor.PulseAll(_queue);
                }

                return;
            }

            lock (_queue)
            {
                item!.State = 2;
                Monitor.PulseAll(_queue);
            }
        }
    }

    // Under the lock: the oldest group nobody encodes yet, marked as being encoded.
    private bool NextQueued(out Encoded? item)
    {
        foreach (var queued in _queue)
        {
            if (queued.State == 0)
            {
                queued.State = 1;
                item = queued;
                return true;
            }
        }

        item = null;
        return false;
    }

    /// <summary>
    /// Waits for the group being encoded, if any, and forgets every queued one (a rollback: their rows are gone);
    /// returns them so the caller can take their buffers back.
    /// </summary>
    public List<Encoded> Discard()
    {
        lock (_queue)
        {
            while (_queue.Any(e => e.State == 1) && _failure is null)
            {
                Monitor.Wait(_queue); // the one being encoded still reads its group's bytes
            }

            var all = _queue.ToList();
            _queue.Clear();
            if (_failure is not null)
            {
                _failure = null;
                _thread = null; // it ended at the failure: the next group starts another
            }

            return all;
        }
    }

    public void Dispose()
    {
        lock (_queue)
        {
            _stopping = true;
            Monitor.PulseAll(_queue);
        }

        _thread?.Join();
    }
}
