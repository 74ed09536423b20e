using System.ComponentModel;
using System.Diagnostics;
using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Recording;

/// <summary>
/// The recorded command: started with the caller's stdin, stdout and stderr; SIGINT, SIGTERM, SIGHUP and SIGQUIT
/// sent to diffkeeper are forwarded to it (diffkeeper itself keeps running to finish the trace).
/// </summary>
internal sealed class ChildProcess : IDisposable
{
    private readonly List<PosixSignalRegistration> _signals = [];
    private readonly Lock _gate = new();
    private Process? _process;
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
    public static ChildProcess Start(IReadOnlyList<string> command, string cwd)
    {
        var psi = new ProcessStartInfo(command[0]) { UseShellExecute = false, WorkingDirectory = cwd };
        foreach (var arg in command.Skip(1))
        {
            psi.ArgumentList.Add(arg);
        }

        var child = new ChildProcess();
        try
        {
            child.Attach(Process.Start(psi)!);
            return child;
        }
        catch (Win32Exception e)
        {
            child.Dispose();
            var notFound = e.NativeErrorCode == Libc.ENOENT;
            throw new DiffKeeperException(notFound ? ExitCode.CommandNotFound : ExitCode.CannotExecute,
                $"cannot run '{command[0]}': {(notFound ? "command not found" : e.Message)}", e);
        }
    }

    private void Attach(Process process)
    {
        int pending;
        lock (_gate)
        {
            _process = process;
            pending = _pending;
        }

        if (pending != 0)
        {
            Libc.Kill(process.Id, pending);
        }
    }

    private Process Process => _process ?? throw new InvalidOperationException("the command has not started");

    public int Pid => Process.Id;

    public async Task<int> WaitAsync(CancellationToken ct)
    {
        await Process.WaitForExitAsync(ct).ConfigureAwait(false);
        return Process.ExitCode; // .NET reports 128+N for a child killed by signal N
    }

    private void Forward(PosixSignalContext context)
    {
        context.Cancel = true;
        Process? process;
        lock (_gate)
        {
            process = _process;
            if (process is null)
            {
                _pending = SignalNumber(context.Signal);
                return;
            }
        }

        try
        {
            if (!process.HasExited)
            {
                Libc.Kill(process.Id, SignalNumber(context.Signal));
            }
        }
        catch (InvalidOperationException)
        {
            // already reaped
        }
    }

    private static int SignalNumber(PosixSignal signal) => signal switch
    {
        PosixSignal.SIGINT => 2,
        PosixSignal.SIGQUIT => 3,
        PosixSignal.SIGHUP => 1,
        _ => 15,
    };

    public static string DescribeExit(int code) => code > 128 && code < 128 + 65
        ? $"killed by {SignalName(code - 128)} (exit status {code})"
        : $"exit status {code}";

    private static string SignalName(int n) => n switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => $"signal {n}",
    };

    public void Dispose()
    {
        foreach (var s in _signals)
        {
            s.Dispose();
        }

        _process?.Dispose();
    }
}
