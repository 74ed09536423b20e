namespace DiffKeeper.Cli.Remote;

/// <summary>Uploads every interval while a local command (record, run) runs; stops them before the final upload.</summary>
internal static class PeriodicUpload
{
    /// <summary>
    /// Runs <paramref name="foreground"/> and, meanwhile, <paramref name="tick"/> every <paramref name="interval"/>;
    /// a failed tick is reported to <paramref name="failed"/> (null: ignored) and the next one tries again. Returns
    /// the foreground's result once the ticks have stopped.
    /// </summary>
    public static async Task<int> AroundAsync(Func<Task<int>> foreground, TimeSpan interval, Func<CancellationToken, Task> tick, Action<Exception>? failed)
    {
        using var stop = new CancellationTokenSource();
        var background = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await Task.Delay(interval, stop.Token).ConfigureAwait(false);
                    await tick(stop.Token).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
                catch (Exception e) when (!stop.IsCancellationRequested)
                {
                    failed?.Invoke(e);
                }
            }
        });

        try
        {
            return await foreground().ConfigureAwait(false);
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await background.ConfigureAwait(false);
        }
    }
}
