namespace DiffKeeper.Remote;

/// <summary>What a client sent and received; read by the CLI's summary lines and the benchmark. Thread-safe.</summary>
public sealed class RequestCounters
{
    private long _gets, _puts, _lists, _deletes, _sent, _received, _retries;

    public long Gets => Interlocked.Read(ref _gets);
    public long Puts => Interlocked.Read(ref _puts);
    public long Lists => Interlocked.Read(ref _lists);
    public long Deletes => Interlocked.Read(ref _deletes);
    public long Requests => Gets + Puts + Lists + Deletes;
    public long BytesSent => Interlocked.Read(ref _sent);
    public long BytesReceived => Interlocked.Read(ref _received);
    public long Retries => Interlocked.Read(ref _retries);

    internal void Get(long bytes) { Interlocked.Increment(ref _gets); Interlocked.Add(ref _received, bytes); }
    internal void Put(long bytes) { Interlocked.Increment(ref _puts); Interlocked.Add(ref _sent, bytes); }
    internal void List() => Interlocked.Increment(ref _lists);
    internal void Delete() => Interlocked.Increment(ref _deletes);
    internal void Retry() => Interlocked.Increment(ref _retries);

    public override string ToString() =>
        $"{Requests} requests ({Gets} GET, {Puts} PUT, {Lists} LIST, {Deletes} DELETE), {BytesSent} bytes sent, {BytesReceived} received";
}
