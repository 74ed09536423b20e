namespace DiffKeeper.Fuzz;

/// <summary>Runs saved inputs (afl-fuzz's crashes/, hangs/) once each and prints what each did, with its time.</summary>
public static class Replay
{
    public static int Run(FuzzTarget target, IEnumerable<string> files)
    {
        GiveCoverageMap();
        var failed = 0;
        foreach (var file in files)
        {
            var started = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                target.Run(File.ReadAllBytes(file));
                Console.WriteLine($"ok      {file} ({started.ElapsedMilliseconds} ms)");
            }
            catch (Exception e)
            {
                failed++;
                Console.WriteLine($"CRASH   {file} ({started.ElapsedMilliseconds} ms): {e}");
            }
        }

        return failed == 0 ? 0 : 1;
    }

    /// <summary>
    /// The instrumented assemblies count edges into afl-fuzz's shared map; without afl-fuzz there is none, so give
    /// them a private one (64 KiB, the size they index).
    /// </summary>
    public static unsafe void GiveCoverageMap()
    {
        if (SharpFuzz.Common.Trace.SharedMem is null)
        {
            SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
        }
    }
}
