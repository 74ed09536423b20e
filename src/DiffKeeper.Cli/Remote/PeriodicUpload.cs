namespace DiffKeeper.Cli.Remote;

/// <summary>Uploads every interval while a local command (record, run) runs; stops them before the final upload.</summary>
internal static class PeriodicUpload
{
    /// <summary>
    /// Runs <paramref name="foreground"/> and, meanwhile, <paramref name="tick"/> every <paramref name="interval"/>;
    /// a failed tick is reported to <paramref name="failed"/> (null: ignored) and the next one tries again. Returns
    /// the foreground's result once the ticks have stopped.
    /// </summary>
    /// <remarks>
    /// When the foreground ends, no tick starts again, but one under way finishes: it is never aborted halfway
    /// through a request. An aborted PUT is no object on S3, but an S3-compatible server may keep what arrived of it
    /// (s3rver keeps an empty or partial file, found when a manifest generation read back empty), and the final
    /// upload does again whatever the tick had not done, so aborting it would save no time.
    /// </remarks>
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
                    await tick(CancellationToken.None).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
                catch (Exception e)
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
