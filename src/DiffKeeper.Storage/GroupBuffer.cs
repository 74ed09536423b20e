using DiffKeeper.Native;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Storage;

/// <summary>
/// One caller's buffers for decoding groups (a tree export's worker). Given to <see cref="BlobReader.Read"/>,
/// the slices of the group it <see cref="Holds"/> (delta bases included) are served from it: the group is decoded
/// whole into it at the first such slice, once, instead of into the reader's shared cache (a new 1 MiB array per
/// group, every page of it a fault). A slice of another group (a file whose pieces straddle two groups) is served
/// from a second buffer, which keeps the last such group. The group's compressed record is read into a third.
/// All three are reused for every group and their pages are populated when they are made
/// (<see cref="PopulatedArray"/>): fresh, they were a fifth of an export's page faults (docs/benchmarks.md, "w3export").
/// Not thread-safe: one per thread.
/// </summary>
public sealed class GroupBuffer
{
    private byte[]? _bytes;
    private byte[]? _side;
    private byte[]? _record;

    /// <summary>The group row whose slices this buffer serves; -1 for none. Set it before reading that group's members.</summary>
    public long Group { get; set; } = -1;

    /// <summary>The group row whose bytes <see cref="Bytes"/> holds, decoded whole; -1 when none is.</summary>
    internal long Decoded { get; set; } = -1;

    internal byte[] Bytes => _bytes ??= PopulatedArray.Allocate(PackFormat.MaxGroupLength);

    /// <summary>The group row whose bytes <see cref="SideBytes"/> holds, decoded whole; -1 when none is.</summary>
    internal long SideDecoded { get; set; } = -1;

    /// <summary>The last group of a slice outside <see cref="Group"/>, decoded whole.</summary>
    internal byte[] SideBytes => _side ??= PopulatedArray.Allocate(PackFormat.MaxGroupLength);

    /// <summary>Whether <paramref name="bytes"/> is the side buffer, whose contents the next slice of another group replaces.</summary>
    internal bool IsSide(byte[] bytes) => ReferenceEquals(_side, bytes);

    /// <summary>Whether <paramref name="loc"/> is a slice of the group this buffer serves.</summary>
    public bool Holds(in BlobLocation loc) => Group >= 0 && loc.IsSlice && loc.Bases.Length == 1 && loc.Bases[0] == Group;

    /// <summary>A buffer of at least <paramref name="length"/> bytes for a group's record, kept for the next one.</summary>
    internal byte[] Record(int length)
    {
        if (_record is null || _record.Length < length)
        {
            // Rounded up to 64 KiB so that slightly larger records do not each make a new one.
            _record = PopulatedArray.Allocate((length + 0xFFFF) & ~0xFFFF);
        }

        return _record;
    }
}
