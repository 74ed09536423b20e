namespace DiffKeeper.Recording;

/// <summary>
/// A dedicated thread started before its work is known, so that starting it is not on the path to the command's
/// start. Starting a thread costs its starter a clone, a fresh stack and a spin of <c>sched_yield</c> until the new
/// thread runs (NativeAOT's <see cref="Thread.Start()"/> returns only then): 1–5 ms a thread at load 2–10 on this
/// project's VMs, and `record` starts three between its baseline and the command (the recorder's consumer,
/// compaction, the command's waiter). Created on another thread while the trace opens, they wait here for
/// <see cref="Run"/>.
/// </summary>
/// <remarks>
/// Contract: <see cref="Run"/> is called at most once; the work then runs on this thread exactly as it would on a
/// thread started at that moment (same name, background, no other work before or after it). <see cref="Dispose"/>
/// without <see cref="Run"/> lets the waiting thread end without running anything; after <see cref="Run"/> it does
/// nothing (the work owns the thread's end, and <see cref="Join"/> waits for it).
/// </remarks>
internal sealed class PrestartedThread : IDisposable
{
    private readonly Thread _thread;
    private readonly ManualResetEventSlim _go = new(false, spinCount: 0);
    private Action? _work;
    private int _released;

    private PrestartedThread(string name) => _thread = new Thread(Wait) { IsBackground = true, Name = name };

    /// <summary>Starts a background thread of this name that waits for its work; returns once it runs.</summary>
    public static PrestartedThread Start(string name)
    {
        var standby = new PrestartedThread(name);
        standby._thread.Start();
        return standby;
    }

    /// <summary>Hands the thread its work, which starts at once.</summary>
    /// <exception cref="InvalidOperationException">The thread was given work or released before.</exception>
    public void Run(Action work)
    {
        if (Interlocked.Exchange(ref _released, 1) != 0)
        {
            throw new InvalidOperationException($"the thread '{_thread.Name}' was already given work or released");
        }

        _work = work;
        _go.Set();
    }

    /// <summary>Waits until the thread has ended (its work done, or released without work).</summary>
    public void Join() => _thread.Join();

    /// <summary>Whether the thread has not ended yet.</summary>
    public bool IsAlive => _thread.IsAlive;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            _go.Set(); // no work: the thread ends
        }
    }

    private void Wait()
    {
        _go.Wait();
        _go.Dispose();
        _work?.Invoke();
    }
}
