using System.Buffers;

namespace DiffKeeper.Native;

/// <summary>
/// Native bytes as <see cref="Memory{T}"/> (the eBPF reader's payload slabs, a followed copy being stored). The
/// memory is the owner's to keep mapped while the manager, or a span taken from it, is in use; pinning is free.
/// </summary>
public unsafe class NativeMemoryManager(byte* pointer, int length) : MemoryManager<byte>
{
    public byte* Pointer { get; } = pointer;

    public override Span<byte> GetSpan() => new(Pointer, length);

    public override MemoryHandle Pin(int elementIndex = 0) => new(Pointer + elementIndex, default, this);

    public override void Unpin()
    {
    }

    protected override void Dispose(bool disposing)
    {
    }
}
