using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Remote;

/// <summary>
/// A `forget` run's marker and lease (docs/store-format.md, "Deleting", steps 0 and 4): <c>forgetting/&lt;run&gt;.running</c>
/// is put when the run starts and again every quarter of <see cref="RemoteLayout.ForgetLease"/>; the run may delete
/// only while <see cref="Check"/> passes (less than half the lease since a put of the marker began); <see cref="EndAsync"/>
/// leaves <c>.done</c>, removes <c>.running</c> and the other runs' markers older than twice the lease. Writers read
/// these markers after their manifest (<see cref="SessionUploader"/>). Not thread-safe except <see cref="Check"/>.
/// </summary>
public sealed class ForgetRunLease : IAsyncDisposable
{
    private readonly IObjectStore _store;
    private readonly TimeProvider _time;
    private readonly string _run;
    private readonly CancellationTokenSource _stop = new();
    private Task _renewals = Task.CompletedTask;
    private long _renewedAtTicks;
    private bool _ended;

    private ForgetRunLease(IObjectStore store, TimeProvider time, string run)
    {
        _store = store;
        _time = time;
        _run = run;
    }

    /// <summary>Puts the run's marker; the run may delete from now on, while <see cref="Check"/> passes.</summary>
    public static async Task<ForgetRunLease> StartAsync(IObjectStore store, TimeProvider time, CancellationToken cancel)
    {
        var lease = new ForgetRunLease(store, time, RemoteLayout.ForgetRun(time.GetUtcNow()));
        await lease.RenewAsync(cancel).ConfigureAwait(false);
        lease._renewals = lease.RenewLoopAsync();
        return lease;
    }

    /// <summary>Throws (exit 10) when the lease ran out: no deletion may follow (a writer may take the run for dead).</summary>
    public void Check()
    {
        var since = _time.GetUtcNow() - new DateTimeOffset(Interlocked.Read(ref _renewedAtTicks), TimeSpan.Zero);
        if (since >= RemoteLayout.ForgetLease / 2)
        {
            throw new DiffKeeperException(ExitCode.SystemError,
                $"forget stopped deleting from {_store.Name}: its lease ran out (its marker {RemoteLayout.ForgetRunning(_run)} was last renewed {since.TotalSeconds:0} s ago; a request hung, or the host paused); run it again");
        }
    }

    /// <summary>Stops renewing, leaves the run's <c>.done</c> marker, removes its <c>.running</c> one and old markers of other runs.</summary>
    public async Task EndAsync(CancellationToken cancel)
    {
        if (_ended)
        {
            return;
        }

        _ended = true;
        await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _renewals.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            // stopped
        }

        await _store.PutAsync(RemoteLayout.ForgetDone(_run), ReadOnlyMemory<byte>.Empty, createOnly: false, cancel).ConfigureAwait(false);
        await _store.DeleteAsync(RemoteLayout.ForgetRunning(_run), cancel).ConfigureAwait(false);
        var old = _time.GetUtcNow() - (2 * RemoteLayout.ForgetLease);
        foreach (var o in await _store.ListAsync(RemoteLayout.ForgettingPrefix, cancel).ConfigureAwait(false))
        {
            if (o.LastModified < old && !o.Key.StartsWith(RemoteLayout.ForgettingPrefix + _run + ".", StringComparison.Ordinal))
            {
                await _store.DeleteAsync(o.Key, cancel).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Ends the run when <see cref="EndAsync"/> was not reached (a failure): best effort, with a warning.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await EndAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DiffKeeperException or IOException or HttpRequestException)
        {
            TraceReader.Warning?.Invoke($"forget could not mark its run ended in {_store.Name} ({e.Message}): writers wait for its marker to expire ({RemoteLayout.ForgetLease.TotalMinutes:0} min)");
        }

        _stop.Dispose();
    }

    private async Task RenewAsync(CancellationToken cancel)
    {
        var started = _time.GetUtcNow();
        await _store.PutAsync(RemoteLayout.ForgetRunning(_run), ReadOnlyMemory<byte>.Empty, createOnly: false, cancel).ConfigureAwait(false);
        Interlocked.Exchange(ref _renewedAtTicks, started.UtcTicks);
    }

    private async Task RenewLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            await Task.Delay(RemoteLayout.ForgetLease / 4, _time, _stop.Token).ConfigureAwait(false);
            try
            {
                await RenewAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (DiffKeeperException)
            {
                // not renewed: Check stops the deletions once the last renewal is too old
            }
        }
    }
}
