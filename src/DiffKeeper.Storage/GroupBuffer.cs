using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// One caller's buffer for one group at a time (a tree export's worker). Given to <see cref="BlobReader.Read"/>,
/// the slices of the group it <see cref="Holds"/> (delta bases included) are served from it: the group is decoded
/// whole into it at the first such slice, once, instead of into the reader's shared cache (a new 1 MiB array per
/// group, every page of it a fault). Slices of other groups take the shared path. Not thread-safe: one per thread;
/// the buffer is reused for every group it is pointed at.
/// </summary>
public sealed class GroupBuffer
{
    private byte[]? _bytes;

    /// <summary>The group row whose slices this buffer serves; -1 for none. Set it before reading that group's members.</summary>
    public long Group { get; set; } = -1;

    /// <summary>The group row whose bytes <see cref="Bytes"/> holds, decoded whole; -1 when none is.</summary>
    internal long Decoded { get; set; } = -1;

    internal byte[] Bytes => _bytes ??= GC.AllocateUninitializedArray<byte>(PackFormat.MaxGroupLength);

    /// <summary>Whether <paramref name="loc"/> is a slice of the group this buffer serves.</summary>
    public bool Holds(in BlobLocation loc) => Group >= 0 && loc.IsSlice && loc.Bases.Length == 1 && loc.Bases[0] == Group;
}
