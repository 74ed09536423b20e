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
    private readonly Process _process;
    private readonly List<PosixSignalRegistration> _signals = [];

    private ChildProcess(Process process)
    {
        _process = process;
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

        try
        {
            return new ChildProcess(Process.Start(psi)!);
        }
        catch (Win32Exception e)
        {
            var notFound = e.NativeErrorCode == Libc.ENOENT;
            throw new DiffKeeperException(notFound ? ExitCode.CommandNotFound : ExitCode.CannotExecute,
                $"cannot run '{command[0]}': {(notFound ? "command not found" : e.Message)}", e);
        }
    }

    public int Pid => _process.Id;

    public async Task<int> WaitAsync(CancellationToken ct)
    {
        await _process.WaitForExitAsync(ct).ConfigureAwait(false);
        return _process.ExitCode; // .NET reports 128+N for a child killed by signal N
    }

    private void Forward(PosixSignalContext context)
    {
        context.Cancel = true;
        try
        {
            if (!_process.HasExited)
            {
                Libc.Kill(_process.Id, SignalNumber(context.Signal));
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

        _process.Dispose();
    }
}
