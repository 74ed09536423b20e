using System.Buffers;
using System.Runtime.InteropServices;

namespace DiffKeeper.Capture;

/// <summary>
/// What a consumer of <see cref="CaptureEvent.Payload"/> must know: a payload may live in memory a backend uses again
/// once nothing reaches it (the eBPF reader's native slabs, owned by a <see cref="MemoryManager{T}"/>). A span taken
/// from it is not a reference the GC sees: keep the memory reachable until the last use of the span.
/// </summary>
public static class PayloadMemory
{
    /// <summary>Keeps a payload's memory from being reused before this call (after the last use of a span taken from it).</summary>
    public static void KeepAlive(ReadOnlyMemory<byte> payload)
    {
        if (MemoryMarshal.TryGetMemoryManager(payload, out MemoryManager<byte>? manager))
        {
            GC.KeepAlive(manager);
        }
    }
}
