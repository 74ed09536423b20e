using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.InteropServices.Marshalling;
using DiffKeeper.Core;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// Passes a path string to libc as its exact bytes (<see cref="PathBytes.Encode(string, Span{byte})"/>), NUL-terminated.
/// The default UTF-8 marshalling would turn a name's non-UTF-8 bytes (held as U+DC80..U+DCFF) into U+FFFD and name
/// another file. Like the default, a short path is encoded into a buffer on the caller's stack (no allocation on
/// the recorder's per-event stat), a long one into native memory freed after the call.
/// </summary>
[CustomMarshaller(typeof(string), MarshalMode.ManagedToUnmanagedIn, typeof(ManagedToUnmanagedIn))]
public static unsafe class PathMarshaller
{
    public ref struct ManagedToUnmanagedIn
    {
        private byte* _native;
        private bool _allocated;

        public static int BufferSize => 0x400;

        public void FromManaged(string? managed, Span<byte> buffer)
        {
            if (managed is null)
            {
                _native = null;
                return;
            }

            var max = PathBytes.MaxByteCount(managed) + 1;
            if (max > buffer.Length)
            {
                _native = (byte*)NativeMemory.Alloc((nuint)max);
                _allocated = true;
                buffer = new Span<byte>(_native, max);
            }
            else
            {
                _native = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(buffer));
            }

            buffer[PathBytes.Encode(managed, buffer)] = 0;
        }

        public readonly byte* ToUnmanaged() => _native;

        public readonly void Free()
        {
            if (_allocated)
            {
                NativeMemory.Free(_native);
            }
        }
    }
}
