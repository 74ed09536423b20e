using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// The system libbpf (libbpf.so.1, 1.x semantics): open an object from memory, size its maps, load, attach its
/// programs, reach its maps, and consume a BPF ring buffer. Functions returning a pointer return null on failure
/// and set errno; functions returning int return a negative errno. Read <see cref="Marshal.GetLastPInvokeError"/>
/// right after a call: anything else that calls into native code (even the first Console write) overwrites it.
/// </summary>
public static unsafe partial class LibBpf
{
    private const string Lib = "libbpf.so.1";

    public const int BPF_ANY = 0;

    [LibraryImport(Lib, EntryPoint = "libbpf_set_print")]
    public static partial nint SetPrint(nint printFn);

    [LibraryImport(Lib, EntryPoint = "libbpf_num_possible_cpus")]
    public static partial int NumPossibleCpus();

    [LibraryImport(Lib, EntryPoint = "bpf_object__open_mem", SetLastError = true)]
    public static partial BpfObjectHandle ObjectOpenMem(void* buffer, nuint size, nint options);

    [LibraryImport(Lib, EntryPoint = "bpf_object__load", SetLastError = true)]
    public static partial int ObjectLoad(BpfObjectHandle obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__close")]
    internal static partial void ObjectClose(nint obj);

    [LibraryImport(Lib, EntryPoint = "bpf_object__find_map_by_name", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint ObjectFindMapByName(BpfObjectHandle obj, string name);

    [LibraryImport(Lib, EntryPoint = "bpf_object__find_program_by_name", StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint ObjectFindProgramByName(BpfObjectHandle obj, string name);

    [LibraryImport(Lib, EntryPoint = "bpf_map__set_max_entries")]
    private static partial int MapSetMaxEntries(nint map, uint maxEntries);

    [LibraryImport(Lib, EntryPoint = "bpf_map__fd")]
    private static partial int MapFd(nint map);

    [LibraryImport(Lib, EntryPoint = "bpf_program__attach", SetLastError = true)]
    private static partial BpfLinkHandle ProgramAttach(nint program);

    [LibraryImport(Lib, EntryPoint = "bpf_link__destroy")]
    internal static partial int LinkDestroy(nint link);

    [LibraryImport(Lib, EntryPoint = "bpf_map_update_elem", SetLastError = true)]
    public static partial int MapUpdateElem(int fd, void* key, void* value, ulong flags);

    [LibraryImport(Lib, EntryPoint = "bpf_map_lookup_elem", SetLastError = true)]
    public static partial int MapLookupElem(int fd, void* key, void* value);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__new", SetLastError = true)]
    public static partial RingBufferHandle RingBufferNew(int mapFd, delegate* unmanaged[Cdecl]<nint, void*, nuint, int> sampleCallback, nint context, nint options);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__poll", SetLastError = true)]
    public static partial int RingBufferPoll(RingBufferHandle ringBuffer, int timeoutMs);

    /// <summary>The epoll descriptor of a ring buffer consumer: readable while one of its rings has data.</summary>
    [LibraryImport(Lib, EntryPoint = "ring_buffer__epoll_fd")]
    public static partial int RingBufferEpollFd(RingBufferHandle ringBuffer);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__consume", SetLastError = true)]
    public static partial int RingBufferConsume(RingBufferHandle ringBuffer);

    [LibraryImport(Lib, EntryPoint = "ring_buffer__free")]
    internal static partial void RingBufferFree(nint ringBuffer);

    /// <summary>The file descriptor of map <paramref name="name"/>, or -1 when the object has no such map.</summary>
    public static int MapFdByName(BpfObjectHandle obj, string name)
    {
        var map = ObjectFindMapByName(obj, name);
        return map == 0 ? -1 : MapFd(map);
    }

    /// <summary>Sets a map's size before the object is loaded; false when there is no such map or libbpf refuses.</summary>
    public static bool SetMaxEntries(BpfObjectHandle obj, string name, uint maxEntries)
    {
        var map = ObjectFindMapByName(obj, name);
        return map != 0 && MapSetMaxEntries(map, maxEntries) == 0;
    }

    /// <summary>Attaches program <paramref name="name"/>; an invalid handle (errno set) when it fails.</summary>
    public static BpfLinkHandle Attach(BpfObjectHandle obj, string name)
    {
        var program = ObjectFindProgramByName(obj, name);
        if (program == 0)
        {
            Marshal.SetLastPInvokeError(2); // ENOENT: no such program in the object
            return new BpfLinkHandle();
        }

        return ProgramAttach(program);
    }
}

/// <summary>An opened (and possibly loaded) bpf_object; closing it unloads its programs and maps.</summary>
public sealed class BpfObjectHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public BpfObjectHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        LibBpf.ObjectClose(handle);
        return true;
    }
}

/// <summary>An attached program; destroying the link detaches it.</summary>
public sealed class BpfLinkHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public BpfLinkHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        LibBpf.LinkDestroy(handle);
        return true;
    }
}

/// <summary>A libbpf ring_buffer consumer (an epoll set over one or more BPF ring buffer maps).</summary>
public sealed class RingBufferHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public RingBufferHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        LibBpf.RingBufferFree(handle);
        return true;
    }
}
