using System.Runtime.InteropServices;
using System.Runtime.InteropServices.Marshalling;
using DiffKeeper.Core;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// Passes a path string to libc as its exact bytes (<see cref="PathBytes.Encode(string, Span{byte})"/>), NUL-terminated.
/// The default UTF-8 marshalling would turn a name's non-UTF-8 bytes (held as U+DC80..U+DCFF) into U+FFFD and name
/// another file.
/// </summary>
[CustomMarshaller(typeof(string), MarshalMode.ManagedToUnmanagedIn, typeof(PathMarshaller))]
public static unsafe class PathMarshaller
{
    public static byte* ConvertToUnmanaged(string? managed)
    {
        if (managed is null)
        {
            return null;
        }

        var buffer = (byte*)NativeMemory.Alloc((nuint)PathBytes.MaxByteCount(managed) + 1);
        var n = PathBytes.Encode(managed, new Span<byte>(buffer, PathBytes.MaxByteCount(managed)));
        buffer[n] = 0;
        return buffer;
    }

    public static void Free(byte* unmanaged) => NativeMemory.Free(unmanaged);
}
