using System.Runtime.InteropServices;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// native/spawn.c: starts a command with the signal dispositions and mask diffkeeper's caller gave diffkeeper,
/// recorded before the runtime started (in the NativeAOT executable; under the JIT the library is loaded late and
/// records the runtime's state instead).
/// </summary>
public static unsafe partial class DkSpawn
{
    private const string Lib = "libdkspawn";

    public const int StageFork = 0;
    public const int StageChdir = 1;
    public const int StageExec = 2;

    [LibraryImport(Lib, EntryPoint = "dk_spawn", StringMarshalling = StringMarshalling.Custom, StringMarshallingCustomType = typeof(PathMarshaller))]
    private static partial int Spawn(string file, byte** argv, string? cwd, out int stage, out int error);

    /// <summary>
    /// Forks and execs <paramref name="command"/>[0] (searched in PATH) in <paramref name="cwd"/>. Returns the pid
    /// once exec succeeded, or -1 with the failing stage (<see cref="StageFork"/>, <see cref="StageChdir"/>,
    /// <see cref="StageExec"/>) and its errno; a child that failed has been reaped.
    /// </summary>
    public static int Start(IReadOnlyList<string> command, string? cwd, out int stage, out int error)
    {
        // argv as NUL-terminated strings in one block, then the NULL-terminated pointer array. Each argument is given
        // its exact bytes back (PathBytes): an argument that is not UTF-8 reaches the command as it reached diffkeeper.
        var strings = command.Select(a => DiffKeeper.Core.PathBytes.Encode(a + "\0")).ToArray();
        var block = new byte[strings.Sum(s => s.Length)];
        var pointers = new nint[strings.Length + 1];
        fixed (byte* basePtr = block)
        fixed (nint* argv = pointers)
        {
            var offset = 0;
            for (var i = 0; i < strings.Length; i++)
            {
                strings[i].CopyTo(block, offset);
                pointers[i] = (nint)(basePtr + offset);
                offset += strings[i].Length;
            }

            return Spawn(command[0], (byte**)argv, cwd, out stage, out error);
        }
    }

    /// <summary>Blocks until the child <paramref name="pid"/> has exited, leaving it unreaped. Returns 0 or an errno.</summary>
    [LibraryImport(Lib, EntryPoint = "dk_wait_exited")]
    public static partial int WaitExited(int pid);
}
