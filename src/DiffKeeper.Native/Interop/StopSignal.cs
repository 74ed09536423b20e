using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// Wakes a reader thread blocked in poll(2) on its event descriptor, so stopping a capture takes microseconds
/// instead of the rest of a poll timeout (the recorder waits for the reader before it can finish the trace).
/// An eventfd polled next to the reader's descriptor; <see cref="Set"/> makes it readable for good.
/// </summary>
public sealed unsafe class StopSignal : IDisposable
{
    private int _fd;
    private volatile bool _set;

    /// <summary>Whether <see cref="Set"/> was called: the reader's loop condition.</summary>
    public bool IsSet => _set;

    public StopSignal()
    {
        _fd = Libc.Eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (_fd < 0)
        {
            throw new DiffKeeper.Core.DiffKeeperException(DiffKeeper.Core.ExitCode.SystemError,
                $"cannot create an eventfd for the capture thread: {Libc.StrError(Marshal.GetLastPInvokeError())}");
        }
    }

    public void Set()
    {
        _set = true;
        Wake();
    }

    /// <summary>Rouses a <see cref="Wait"/> without stopping the reader (a drain request).</summary>
    public void Wake()
    {
        ulong one = 1;
        _ = Libc.Write(_fd, (byte*)&one, sizeof(ulong));
    }

    /// <summary>
    /// poll(2) on <paramref name="fd"/> and the stop signal until either is readable or the timeout passes;
    /// true when <paramref name="fd"/> is readable.
    /// </summary>
    public bool Wait(int fd, int timeoutMs)
    {
        var fds = stackalloc Libc.PollFd[2];
        fds[0] = new Libc.PollFd { Fd = fd, Events = Libc.POLLIN };
        fds[1] = new Libc.PollFd { Fd = _fd, Events = Libc.POLLIN };
        var ready = Libc.Poll(fds, 2, timeoutMs) > 0;
        if (ready && (fds[1].Revents & Libc.POLLIN) != 0 && !_set)
        {
            // A wake, not a stop: consume it so the next wait waits (a stop set meanwhile is seen by IsSet).
            ulong count;
            _ = Libc.Read(_fd, (byte*)&count, sizeof(ulong));
        }

        return ready && (fds[0].Revents & Libc.POLLIN) != 0;
    }

    public void Dispose()
    {
        if (_fd >= 0)
        {
            Libc.Close(_fd);
            _fd = -1;
        }
    }
}
