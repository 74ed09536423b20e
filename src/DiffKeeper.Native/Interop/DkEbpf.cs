using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Native.Interop;

/// <summary>
/// native/ebpf_skeleton.c: bpf/diffkeeper.bpf.c loaded through libbpf's light skeleton (generated at build time by
/// `bpftool gen skeleton -L`). A loader BPF program creates the maps and loads the programs; the kernel resolves the
/// CO-RE relocations and BTF ids, so nothing parses the kernel's BTF in user space. Functions return 0 or a negative
/// errno; a diffkeeper built without the skeleton fails every load with ENOSYS.
/// </summary>
public static unsafe partial class DkEbpf
{
    private const string Lib = "libdkebpf";

    public const int StageOpen = 0;
    public const int StageLoad = 1;

    /// <summary>The programs, in the order <see cref="Attach"/> attaches them (its failed index names one).</summary>
    public static readonly string[] Programs = ["dk_fork", "dk_exit", "dk_sys_exit"];

    [LibraryImport(Lib, EntryPoint = "dk_ebpf_load")]
    private static partial int LoadNative(uint ringBytes, uint scratchEntries, out nint skeleton, out int stage);

    [LibraryImport(Lib, EntryPoint = "dk_ebpf_map_fd", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MapFdNative(LightSkeletonHandle skeleton, string name);

    [LibraryImport(Lib, EntryPoint = "dk_ebpf_attach")]
    private static partial int AttachNative(LightSkeletonHandle skeleton, out int failed);

    [LibraryImport(Lib, EntryPoint = "dk_ebpf_destroy")]
    internal static partial void Destroy(nint skeleton);

    /// <summary>
    /// Creates the maps (the ring buffer of <paramref name="ringBytes"/>, <paramref name="scratchEntries"/> scratch
    /// slots) and loads the programs, unattached. Null with the negative errno and the failing stage
    /// (<see cref="StageOpen"/>, <see cref="StageLoad"/>) when it cannot; nothing stays loaded then.
    /// </summary>
    public static LightSkeletonHandle? Load(uint ringBytes, uint scratchEntries, out int error, out int stage)
    {
        error = LoadNative(ringBytes, scratchEntries, out var skeleton, out stage);
        if (error != 0 || skeleton == 0)
        {
            return null;
        }

        var handle = new LightSkeletonHandle();
        Marshal.InitHandle(handle, skeleton);
        return handle;
    }

    /// <summary>The descriptor of map <paramref name="name"/> (owned by the skeleton), or -1 when there is none.</summary>
    public static int MapFd(LightSkeletonHandle skeleton, string name) => MapFdNative(skeleton, name);

    /// <summary>Attaches every program: 0, or a negative errno and the failing program's index in <see cref="Programs"/>.</summary>
    public static int Attach(LightSkeletonHandle skeleton, out int failed) => AttachNative(skeleton, out failed);
}

/// <summary>A loaded light skeleton; releasing it detaches the programs and closes every map and program descriptor.</summary>
public sealed class LightSkeletonHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public LightSkeletonHandle()
        : base(ownsHandle: true)
    {
    }

    protected override bool ReleaseHandle()
    {
        DkEbpf.Destroy(handle);
        return true;
    }
}
