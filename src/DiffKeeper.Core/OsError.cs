using System.ComponentModel;
using System.Runtime.InteropServices;

namespace DiffKeeper.Core;

/// <summary>
/// Our sentence for a failed operating system call that .NET reported as an exception (IOException,
/// UnauthorizedAccessException, Win32Exception): the user sees what failed, on which path, and what to do, never
/// .NET's own wording or a type name.
/// </summary>
public static class OsError
{
    private const int EPERM = 1, ENOENT = 2, EACCES = 13, EEXIST = 17, ENOTDIR = 20, EISDIR = 21, ENOSPC = 28, EROFS = 30, EDQUOT = 122;

    /// <summary>An anticipated failure (exit 10) for <paramref name="action"/> (for example "create the directory") on <paramref name="path"/>.</summary>
    public static DiffKeeperException At(Exception e, string action, string path) =>
        new(ExitCode.SystemError, $"cannot {action} {path}: {Reason(e)}{Advice(e, path)}", e);

    /// <summary>The same sentence for a libc call that failed with <paramref name="errno"/>.</summary>
    public static DiffKeeperException At(int errno, string action, string path) => At(new Win32Exception(errno), action, path);

    /// <summary>Whether <paramref name="e"/> is an operating system failure that <see cref="At"/> can describe.</summary>
    public static bool IsOsFailure(Exception e) => e is IOException or UnauthorizedAccessException or Win32Exception;

    /// <summary>The failure in a few words, lower case: "permission denied", "no such file or directory".</summary>
    public static string Reason(Exception e) => Errno(e) switch
    {
        EACCES or EPERM => "permission denied",
        ENOENT => "no such file or directory",
        EEXIST => "something that is not a directory is in the way",
        ENOTDIR => "a part of the path is not a directory",
        EISDIR => "it is a directory",
        ENOSPC => "no space left on the device",
        EDQUOT => "disk quota exceeded",
        EROFS => "read-only file system",
        > 0 and var errno => Marshal.GetPInvokeErrorMessage(errno).ToLowerInvariant(),
        _ => "the operating system refused",
    };

    private static string Advice(Exception e, string path) => Errno(e) switch
    {
        EACCES or EPERM => $"; check the owner and mode of {path} and its parent directories, or run as a user who may use them",
        ENOSPC or EDQUOT => "; free some space and try again",
        EEXIST or ENOTDIR => "; move that file away or choose another path",
        _ => "",
    };

    /// <summary>
    /// The errno behind the exception, or 0. On Linux .NET raises UnauthorizedAccessException for EACCES and EPERM
    /// (without the number), File/DirectoryNotFoundException for ENOENT, and otherwise an IOException whose HResult
    /// is the raw errno.
    /// </summary>
    private static int Errno(Exception e) => e switch
    {
        UnauthorizedAccessException => EACCES,
        FileNotFoundException or DirectoryNotFoundException => ENOENT,
        Win32Exception w => w.NativeErrorCode,
        IOException { HResult: > 0 and < 4096 } io => io.HResult,
        _ => 0,
    };
}
