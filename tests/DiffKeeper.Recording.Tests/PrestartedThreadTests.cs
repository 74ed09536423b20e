namespace DiffKeeper.Recording.Tests;

/// <summary>
/// `record`'s threads started ahead of their work (the recorder's consumer, compaction, the command's waiter): the
/// thread is running in the kernel when <see cref="PrestartedThread.Start"/> returns, its work runs on it, and one
/// never given work ends.
/// </summary>
public sealed class PrestartedThreadTests
{
    private static readonly TimeSpan Ample = TimeSpan.FromMinutes(1);

    // The kernel's name of each thread of this process (/proc/self/task/*/comm: the first 15 bytes of a .NET
    // thread's name).
    private static List<string> KernelThreadNames()
    {
        var names = new List<string>();
        foreach (var task in Directory.GetDirectories("/proc/self/task"))
        {
            try
            {
                names.Add(File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n'));
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException or IOException)
            {
                // a thread that ended between the listing and the read (a pool thread retiring)
            }
        }

        return names;
    }

    // Join without a bound would hang the suite if the thread never ended: the wait is bounded, and failing it fails.
    private static Task Ended(PrestartedThread thread) =>
        Task.Run(thread.Join, TestContext.Current.CancellationToken).WaitAsync(Ample, TestContext.Current.CancellationToken);

    [Fact]
    public async Task The_thread_runs_when_Start_returns_and_the_work_runs_on_it()
    {
        var name = "pst-" + Guid.NewGuid().ToString("N")[..8];
        using var standby = PrestartedThread.Start(name);
        Assert.Single(KernelThreadNames(), n => n == name); // started, not merely created: the kernel has it

        var ran = new TaskCompletionSource<(string? Name, bool Background, int Id)>();
        var caller = Environment.CurrentManagedThreadId;
        standby.Run(() => ran.SetResult((Thread.CurrentThread.Name, Thread.CurrentThread.IsBackground, Environment.CurrentManagedThreadId)));
        var (threadName, background, id) = await ran.Task.WaitAsync(Ample, TestContext.Current.CancellationToken);
        Assert.Equal(name, threadName);
        Assert.True(background);
        Assert.NotEqual(caller, id);
        await Ended(standby);
        Assert.False(standby.IsAlive);
    }

    [Fact]
    public async Task A_thread_never_given_work_ends_at_Dispose_and_takes_none_after()
    {
        var name = "pst-" + Guid.NewGuid().ToString("N")[..8];
        var standby = PrestartedThread.Start(name);
        Assert.True(standby.IsAlive);
        standby.Dispose();
        await Ended(standby);
        Assert.False(standby.IsAlive);
        Assert.Throws<InvalidOperationException>(() => standby.Run(() => Assert.Fail("ran after Dispose")));
        standby.Dispose(); // twice: nothing
    }

    [Fact]
    public async Task Work_is_taken_once_and_Dispose_after_it_leaves_the_work_running()
    {
        using var release = new ManualResetEventSlim();
        var standby = PrestartedThread.Start("pst-once");
        var runs = 0;
        standby.Run(() =>
        {
            Interlocked.Increment(ref runs);
            release.Wait();
        });
        Assert.Throws<InvalidOperationException>(() => standby.Run(() => Interlocked.Increment(ref runs)));
        standby.Dispose();
        Assert.True(standby.IsAlive); // the work owns the thread's end
        release.Set();
        await Ended(standby);
        Assert.Equal(1, runs);
    }
}
