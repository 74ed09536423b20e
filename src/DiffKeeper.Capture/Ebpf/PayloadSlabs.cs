using System.Buffers;
using System.Collections.Concurrent;
using DiffKeeper.Native;
using DiffKeeper.Native.Interop;

namespace DiffKeeper.Capture.Ebpf;

/// <summary>
/// The native memory the eBPF reader copies write payloads into (an untar: ~130 MB of them), in 2 MiB slabs that are
/// used again. A slab is one transparent huge page where the kernel gives one (<c>MADV_HUGEPAGE</c>; THP in
/// <c>madvise</c> mode): on a VM whose page faults trap to the hypervisor a fresh 4 KiB page cost ~25 µs, and the 1 MiB
/// arrays the reader used before were fresh memory for the GC at every slab, ~40 % of the reader's time in faults.
/// Contract: a payload is a <see cref="ReadOnlyMemory{T}"/> over its slab's <see cref="MemoryManager{T}"/>, so the slab
/// stays as long as any payload cut from it is reachable; its finalizer gives the memory back here (at most
/// <see cref="MaxFree"/> slabs are kept, the rest unmapped), and the reader cuts from it again. A consumer that takes
/// a payload's <see cref="ReadOnlyMemory{T}.Span"/> keeps the memory (or the event) reachable until it is done with
/// the span (<see cref="PayloadMemory.KeepAlive"/>). Only the reader thread cuts (<see cref="Copy"/>); finalizers return slabs from
/// their own thread. After <see cref="Dispose"/> returned slabs are unmapped.
/// </summary>
internal sealed unsafe class PayloadSlabs : IDisposable
{
    public const int SlabSize = 2 << 20;

    /// <summary>Free slabs kept for reuse (64 MiB, the ring's default size): a backlog beyond that is unmapped as it drains.</summary>
    public const int MaxFree = 32;

    private readonly ConcurrentStack<nint> _free = new(); // the slab freed last is reused first: its pages are the warm ones
    private volatile bool _disposed;
    private Slab? _current;
    private int _used;

    /// <summary>Slabs mapped so far (with reuse it stops growing once the backlog does).</summary>
    public int Mapped { get; private set; }

    /// <summary>A copy of <paramref name="payload"/> in a slab, or null when it is over an eighth of one or no slab could be mapped.</summary>
    public ReadOnlyMemory<byte>? Copy(ReadOnlySpan<byte> payload)
    {
        if (payload.Length > SlabSize / 8)
        {
            return null; // the caller keeps it in an array of its own: a slab holds at least eight
        }

        if (_current is null || SlabSize - _used < payload.Length)
        {
            var memory = Rent();
            if (memory is null)
            {
                return null;
            }

            _current = new Slab(this, memory);
            _used = 0;
        }

        var at = _used;
        payload.CopyTo(new Span<byte>(_current.Pointer + at, payload.Length));
        _used = at + payload.Length;
        return _current.Memory.Slice(at, payload.Length);
    }

    public void Dispose()
    {
        _disposed = true;
        _current = null; // its payloads keep it; its finalizer unmaps it
        while (_free.TryPop(out var p))
        {
            _ = Libc.Munmap((void*)p, SlabSize);
        }
    }

    private byte* Rent()
    {
        if (_free.TryPop(out var p))
        {
            return (byte*)p;
        }

        var mapped = Map();
        Mapped += mapped is null ? 0 : 1;
        return mapped;
    }

    private static byte* Map() => HugePageMemory.Map(SlabSize, populate: false);

    private void Return(byte* p)
    {
        if (!_disposed && _free.Count < MaxFree)
        {
            _free.Push((nint)p);
            if (!_disposed || !_free.TryPop(out var again))
            {
                return;
            }

            p = (byte*)again; // disposed meanwhile: Dispose may have missed it
        }

        _ = Libc.Munmap(p, SlabSize);
    }

    private sealed class Slab(PayloadSlabs owner, byte* pointer) : NativeMemoryManager(pointer, SlabSize)
    {
        // CA2015's hazard is the contract above: consumers keep the memory reachable while they use a span of it
        // (RecordingCore: PayloadMemory.KeepAlive after the copy); without the finalizer no slab could be used again.
        [System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA2015", Justification = "Reuse after the last reference is the point; consumers keep the memory reachable while using a span (PayloadMemory.KeepAlive).")]
        ~Slab() => owner.Return(Pointer);
    }
}
