using System.Runtime.InteropServices;

namespace DiffKeeper.Bench;

/// <summary>
/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID): on a machine shared with other builds it moves far
/// less than wall time, which includes the time other processes held the core.
/// </summary>
internal static partial class ThreadCpuClock
{
    private const int ClockThreadCpuTimeId = 3;

    public static double NowMilliseconds()
    {
        if (ClockGetTime(ClockThreadCpuTimeId, out var ts) != 0)
        {
            throw new InvalidOperationException("clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        }

        return (ts.Seconds * 1e3) + (ts.Nanoseconds / 1e6);
    }

    [LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGetTime(int clock, out TimeSpec ts);

    [StructLayout(LayoutKind.Sequential)]
    private struct TimeSpec
    {
        public long Seconds;
        public long Nanoseconds;
    }
}
