using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>
/// The writer's exclusive flock on &lt;trace&gt;/LOCK. Released by the kernel when the process dies, so a kill -9
/// never leaves a stale lock. Holds the writer's pid as text for the "locked" message.
/// </summary>
public sealed class TraceLock : IDisposable
{
    private readonly SafeFileHandle _handle;

    private TraceLock(SafeFileHandle handle) => _handle = handle;

    public static TraceLock Acquire(string traceDir)
    {
        var path = Path.Combine(traceDir, "LOCK");
        // Opened with open(2), not File.OpenHandle: .NET takes its own flock on files it opens, which would
        // collide with this one.
        var fd = Libc.Open(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_CLOEXEC | Libc.O_NOFOLLOW | Libc.O_NONBLOCK, 0x180);
        if (fd < 0)
        {
            var openErrno = Marshal.GetLastPInvokeError();
            throw OsError.At(openErrno, "write to the trace at", traceDir);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.Flock((int)handle.DangerousGetHandle(), Libc.LOCK_EX | Libc.LOCK_NB) != 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            var holder = ReadHolder(handle);
            handle.Dispose();
            throw new DiffKeeperException(ExitCode.Locked, errno == Libc.EWOULDBLOCK
                ? $"the trace {traceDir} is being written by another diffkeeper{holder}; wait for it to finish or use another --trace"
                : $"cannot lock {path}: {Libc.StrError(errno)}");
        }

        var pid = Encoding.ASCII.GetBytes(Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        RandomAccess.SetLength(handle, 0);
        RandomAccess.Write(handle, pid, 0);
        return new TraceLock(handle);
    }

    private static string ReadHolder(SafeFileHandle handle)
    {
        var buffer = new byte[32];
        var n = RandomAccess.Read(handle, buffer, 0);
        var text = Encoding.ASCII.GetString(buffer, 0, n).Trim();
        return text.Length > 0 && text.All(char.IsAsciiDigit) ? $" (pid {text})" : "";
    }

    public void Dispose() => _handle.Dispose();
}
