using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording;

/// <summary>
/// The recorded command: started with the caller's stdin, stdout and stderr, and with the signal dispositions
/// (ignored or default) and signal mask diffkeeper's caller gave diffkeeper, not the ones the .NET runtime set
/// (native/spawn.c). SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to diffkeeper are forwarded to it (diffkeeper
/// itself keeps running to finish the trace). Its exit is collected by this class alone, by pid: no other
/// waiter in the process reaps it (System.Diagnostics.Process is not used, and keep mode's orphan reaper skips it).
/// </summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly List<PosixSignalRegistration> _signals = [];
    private readonly Lock _gate = new();
    private readonly TaskCompletionSource<ChildExit> _exit = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _pid;
    private bool _exited; // set before the pid is reaped: from then on the number may belong to another process
    private int _pending; // a signal that came before the command existed: sent to it once it does

    // The handlers are in place before the command starts: a command that is quick to get ready (and a caller that
    // signals as soon as it is) must not meet the runtime's default SIGTERM handling, which ends diffkeeper
    // with 143 and leaves the command running unrecorded.
    private ChildProcess()
    {
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP, PosixSignal.SIGQUIT })
        {
            _signals.Add(PosixSignalRegistration.Create(signal, Forward));
        }
    }

    /// <summary>Starts the command, or throws with exit code 127 (not found) or 126 (cannot execute).</summary>
    /// <remarks>
    /// The command is started by the thread that then waits for its exit, whatever thread calls this: a command that
    /// asks to be signalled when its parent dies (PR_SET_PDEATHSIG: bwrap --die-with-parent, browsers' helpers) takes
    /// the thread that forked it for its parent, and a thread-pool thread (where an await may leave the caller) retires
    /// after ~20 idle seconds: the command got SIGTERM 19 s in.
    /// </remarks>
    /// <param name="waiter">The thread to start and wait on, started ahead (`record` starts it while the trace opens); a
    /// thread named "command wait" is started here when null. It becomes the command's.</param>
    public static ChildProcess Start(IReadOnlyList<string> command, string cwd, PrestartedThread? waiter = null)
    {
        var child = new ChildProcess();
        var started = new TaskCompletionSource<(int Pid, int Stage, int Error)>();
        (waiter ?? PrestartedThread.Start("command wait")).Run(() =>
        {
            int spawned, spawnStage, spawnError;
            try
            {
                spawned = DkSpawn.Start(command, cwd, out spawnStage, out spawnError);
                if (spawned >= 0)
                {
                    child.Attach(spawned);
                }
            }
            catch (Exception e)
            {
                started.SetException(e); // rethrown by the caller
                return;
            }

            started.SetResult((spawned, spawnStage, spawnError));
            if (spawned >= 0)
            {
                child.WaitForExit();
            }
        });
        var (pid, stage, error) = started.Task.GetAwaiter().GetResult();
        if (pid < 0)
        {
            child.Dispose();
            throw stage switch
            {
                DkSpawn.StageExec when error == Libc.ENOENT =>
                    new DiffKeeperException(ExitCode.CommandNotFound, $"cannot run '{command[0]}': command not found"),
                DkSpawn.StageExec =>
                    new DiffKeeperException(ExitCode.CannotExecute, $"cannot run '{command[0]}': {Libc.StrError(error)}"),
                DkSpawn.StageChdir =>
                    new DiffKeeperException(ExitCode.CannotExecute, $"cannot run '{command[0]}' in {cwd}: {Libc.StrError(error)}"),
                _ => new DiffKeeperException(ExitCode.SystemError, $"cannot start a process for '{command[0]}': {Libc.StrError(error)}"),
            };
        }

        return child;
    }

    private void Attach(int pid)
    {
        int pending;
        lock (_gate)
        {
            _pid = pid;
            pending = _pending;
        }

        if (pending != 0)
        {
            Libc.Kill(pid, pending);
        }
    }

    public int Pid => _pid != 0 ? _pid : throw new InvalidOperationException("the command has not started");

    public Task<ChildExit> WaitAsync(CancellationToken ct) => _exit.Task.WaitAsync(ct);

    private void WaitForExit()
    {
        // Exited but not reaped yet: the pid still names the command while Forward may be sending to it.
        var error = DkSpawn.WaitExited(_pid);
        lock (_gate)
        {
            _exited = true;
        }

        int status = 0;
        while (error == 0 && Libc.Waitpid(_pid, out status, 0) < 0)
        {
            error = Marshal.GetLastPInvokeError();
            error = error == Libc.EINTR ? 0 : error;
        }

        if (error != 0)
        {
            _exit.SetException(new InvalidOperationException($"waiting for the command (pid {_pid}) failed: {Libc.StrError(error)}"));
            return;
        }

        _exit.SetResult(new ChildExit(status));
    }

    private void Forward(PosixSignalContext context)
    {
        context.Cancel = true;
        var signal = SignalNumber(context.Signal);
        lock (_gate)
        {
            if (_pid == 0)
            {
                _pending = signal;
            }
            else if (!_exited)
            {
                // Under the lock: the waiting thread cannot reap the command (and free its pid) meanwhile.
                Libc.Kill(_pid, signal);
            }
        }
    }

    private static int SignalNumber(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGINT => 2,
        PosixSignal.SIGQUIT => 3,
        PosixSignal.SIGHUP => 1,
        _ => 15,
    };

    public void Dispose()
    {
        foreach (var s in _signals)
        {
            s.Dispose();
        }
    }
}
