using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Packs;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Replay.BigFiles;

/// <summary>
/// Puts a changed block into a materialized file by sharing the pack's extents (FICLONERANGE) where the block lies
/// uncompressed at a 4 KiB-aligned offset of its pack: a member of an aligned group (a zstd frame of raw blocks,
/// docs/store-format.md "Aligned groups"), or a raw record whose payload happens to be aligned. The bytes are read from
/// the pack and checked by their SHA-256 first, as any read of a blob is, and the clone takes the same range of the
/// same immutable (committed) pack bytes. When the clone fails (EXDEV: the pack is on another file system; EOPNOTSUPP,
/// EINVAL: the file system cannot share these ranges), the block just read is written instead, no clone is tried
/// again, and <see cref="Reason"/> says why once. Thread-safe.
/// </summary>
public sealed class PackClones(TraceReader reader) : IDisposable
{
    private const int Alignment = 4096;
    private readonly ConcurrentDictionary<long, SafeFileHandle?> _packs = new();
    private readonly ConcurrentDictionary<long, (long PackId, (long Content, long Pack, int Length)[] Blocks)> _frames = new();
    private volatile string? _reason;

    /// <summary>Why blocks that could have been cloned were written instead (the first failure), or null.</summary>
    public string? Reason => _reason;

    /// <summary>Most bytes one clone takes: a run of blocks adjacent both in the file and in the pack.</summary>
    public const int MaxRun = 2 << 20;

    /// <summary>
    /// Where blob <paramref name="loc"/>, to go to <paramref name="destOffset"/>, lies raw and 4 KiB-aligned in a pack:
    /// (pack id, offset), or null when it does not (then it is read the ordinary way).
    /// </summary>
    public (long PackId, long Offset)? Locate(in BlobLocation loc, long destOffset)
    {
        var length = loc.RawLength;
        if (length == 0 || length % Alignment != 0 || destOffset % Alignment != 0 || Where(loc) is not { } at || at.Pack % Alignment != 0)
        {
            return null;
        }

        return (at.PackId, at.Pack);
    }

    /// <summary>
    /// Puts blobs <paramref name="locs"/>, adjacent in the file from <paramref name="destOffset"/> and in pack
    /// <paramref name="packId"/> from <paramref name="packOffset"/> (<see cref="Locate"/>), into <paramref name="dest"/>:
    /// reads them from the pack one by one into <paramref name="scratch"/> (at least the longest blob's length), checks
    /// each by its SHA-256, then clones the whole run with one FICLONERANGE, or, when the clone fails, writes them (read
    /// again). Returns the bytes cloned (0 when written), or -1 when a block does not hash to its id there (the caller
    /// then reads them the ordinary way, which names the damage).
    /// </summary>
    public long PutRun(IReadOnlyList<BlobLocation> locs, long packId, long packOffset, SafeFileHandle dest, long destOffset, byte[] scratch, string rel)
    {
        if (Pack(packId) is not { } pack)
        {
            return -1;
        }

        // Block by block through one small buffer: a run's 2 MiB read into a buffer of its size cost a fresh 2 MiB of
        // page faults per worker, and the hash reads each block while it is still in the cache.
        bool ReadChecked(in BlobLocation loc, long at)
        {
            var block = scratch.AsSpan(0, loc.RawLength);
            Span<byte> hash = stackalloc byte[32];
            if (PackReader.ReadFully(pack, block, packOffset + at) != block.Length)
            {
                return false;
            }

            Storage.Codecs.Sha256.HashData(block, hash);
            return hash.SequenceEqual(loc.Id.Bytes);
        }

        long at = 0;
        if (_reason is null) // once cloning failed it is not tried again: the blocks are checked as they are copied below
        {
            foreach (var loc in locs)
            {
                if (!ReadChecked(loc, at))
                {
                    return -1;
                }

                at += loc.RawLength;
            }

            if (Libc.CloneRange((int)dest.DangerousGetHandle(), (int)pack.DangerousGetHandle(), packOffset, at, destOffset) == 0)
            {
                return at;
            }

            var errno = Marshal.GetLastPInvokeError();
            _reason ??= $"cloning blocks from the store's pack failed ({Libc.StrError(errno).ToLowerInvariant()}{(errno == Libc.EXDEV ? ": the store is on another file system" : "")})";
        }

        at = 0;
        foreach (var loc in locs)
        {
            // Checked again: the bytes written are the bytes read now, whatever the first read saw.
            if (!ReadChecked(loc, at))
            {
                return -1;
            }

            SafeTreeWriter.Write(dest, scratch.AsSpan(0, loc.RawLength), destOffset + at, rel);
            at += loc.RawLength;
        }

        return 0;
    }

    /// <summary>Where the blob's raw bytes lie in a pack, uncompressed: (pack id, offset), or null.</summary>
    private (long PackId, long Pack)? Where(in BlobLocation loc)
    {
        if (loc.Codec == BlobCodec.Raw && loc.StoredLength == loc.RawLength)
        {
            return (loc.PackId, loc.Offset + PackFormat.RecordHeaderSize);
        }

        if (!loc.IsSlice || loc.Bases.Length != 1)
        {
            return null;
        }

        // A group's row and frame are looked up once for all its members (W4: 15 a group).
        var (packId, blocks) = _frames.GetOrAdd(loc.Bases[0], FrameOf);
        foreach (var (content, pack, length) in blocks)
        {
            if (loc.Offset >= content && loc.Offset + loc.RawLength <= content + length)
            {
                return (packId, pack + (loc.Offset - content));
            }
        }

        return null;
    }

    /// <summary>Group row <paramref name="row"/>'s pack and raw blocks (<see cref="RawBlocks"/>); none when it is not a group.</summary>
    private (long PackId, (long Content, long Pack, int Length)[] Blocks) FrameOf(long row)
    {
        BlobLocation group;
        try
        {
            group = reader.Blobs.Location(row);
        }
        catch (BlobMissingException)
        {
            return (0, []);
        }

        return group.Codec == BlobCodec.Group ? (group.PackId, RawBlocks(group)) : (0, []);
    }

    /// <summary>
    /// The raw blocks of a group's zstd frame, as (offset in the group's raw bytes, offset in the pack, length), up to
    /// the first compressed block (whose raw length is known only by decoding it). Read from the pack's block headers;
    /// a malformed frame gives fewer blocks, never a wrong byte (every block is checked by its SHA-256 before a clone).
    /// </summary>
    private (long Content, long Pack, int Length)[] RawBlocks(in BlobLocation group)
    {
        var result = new List<(long, long, int)>();
        if (Pack(group.PackId) is not { } pack)
        {
            return [];
        }

        var start = group.Offset + PackFormat.RecordHeaderSize;
        var end = start + group.StoredLength;
        Span<byte> header = stackalloc byte[18];
        if (PackReader.ReadFully(pack, header, start) != header.Length || BinaryPrimitives.ReadUInt32LittleEndian(header) != 0xFD2FB528)
        {
            return [];
        }

        var descriptor = header[4];
        var single = (descriptor >> 5) & 1;
        var fcsFlag = descriptor >> 6;
        var dictionary = (descriptor & 3) switch { 0 => 0, 1 => 1, 2 => 2, _ => 4 };
        var fcs = fcsFlag == 0 ? single : 1 << fcsFlag;
        var pos = start + 5 + (single == 0 ? 1 : 0) + dictionary + fcs;
        long content = 0;
        Span<byte> block = stackalloc byte[3];
        for (var n = 0; n < 1024 && pos + 3 <= end; n++)
        {
            if (PackReader.ReadFully(pack, block, pos) != 3)
            {
                break;
            }

            var h = block[0] | (block[1] << 8) | (block[2] << 16);
            var (last, type, size) = ((h & 1) != 0, (h >> 1) & 3, h >> 3);
            if (type == 0)
            {
                result.Add((content, pos + 3, size));
                pos += 3 + size;
            }
            else if (type == 1)
            {
                pos += 4;
            }
            else
            {
                break;
            }

            content += size;
            if (last)
            {
                break;
            }
        }

        return [.. result];
    }

    private SafeFileHandle? Pack(long packId) => _packs.GetOrAdd(packId, id =>
    {
        try
        {
            return TraceFile.OpenRegular(Path.Combine(reader.TraceDir, PackFormat.RelativePath(id)));
        }
        catch (Exception e) when (OsError.IsOsFailure(e) || e is DiffKeeperException)
        {
            return null; // the ordinary read says what is wrong with it
        }
    });

    public void Dispose()
    {
        foreach (var h in _packs.Values)
        {
            h?.Dispose();
        }
    }
}
