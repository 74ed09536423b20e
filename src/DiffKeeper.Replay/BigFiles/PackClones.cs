using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using DiffKeeper.Core;
using DiffKeeper.Native.Interop;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Codecs;
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

    /// <summary>Bytes of each lane <see cref="PutRuns"/> reads from the pack at a time.</summary>
    public const int LaneChunk = 16 << 10;

    /// <summary>
    /// The scratch <see cref="PutRuns"/> reads into: one <see cref="LaneChunk"/> for each of <see cref="Sha256.Lanes"/>
    /// blocks hashed at once (256 KiB, which stays in the core's cache from the read to the hash; 32 and 64 KiB a lane,
    /// a W4 block in one pread, measured slower: docs/benchmarks.md, "mat15").
    /// </summary>
    public const int LaneBytes = Sha256.Lanes * LaneChunk;

    /// <summary>
    /// Blobs adjacent in the file from <paramref name="DestOffset"/> and in pack <paramref name="PackId"/> from
    /// <paramref name="PackOffset"/> (<see cref="Locate"/>): a slice of the caller's rows, not a copy (W4's 117 runs
    /// copied ~16 KiB of rows into arrays of their own).
    /// </summary>
    public readonly record struct Run(ArraySegment<BlobLocation> Blocks, long PackId, long PackOffset, long DestOffset);

    /// <summary>
    /// Puts each of <paramref name="runs"/> into <paramref name="dest"/>: reads every block of every run from the pack and
    /// checks it by its SHA-256 (sixteen blocks at a time, one in each lane, <see cref="Sha256.Hasher.AppendEach"/>, read
    /// <see cref="LaneChunk"/> bytes at a time into <paramref name="lanes"/>), then clones each run whose blocks all hash to
    /// their ids with one FICLONERANGE of the same pack range, or, when a clone fails, writes it (read again into
    /// <paramref name="scratch"/>() and checked again as it is copied; once cloning has failed, runs are not checked
    /// beforehand). <paramref name="results"/>[r] is the bytes cloned, 0 when written, or -1 when a block does not hash
    /// to its id there (the caller then reads that run the ordinary way, which names the damage).
    /// </summary>
    public void PutRuns(ReadOnlySpan<Run> runs, Span<long> results, SafeFileHandle dest, Span<byte> lanes, Func<byte[]> scratch, string rel)
    {
        Span<bool> ok = runs.Length <= 256 ? stackalloc bool[runs.Length] : new bool[runs.Length];
        if (_reason is null)
        {
            Check(runs, ok, lanes);
        }

        for (var r = 0; r < runs.Length; r++)
        {
            var run = runs[r];
            var bytes = 0L;
            foreach (var loc in run.Blocks)
            {
                bytes += loc.RawLength;
            }

            if (_reason is null)
            {
                if (!ok[r] || Pack(run.PackId) is not { } pack)
                {
                    results[r] = -1;
                    continue;
                }

                if (Libc.CloneRange((int)dest.DangerousGetHandle(), (int)pack.DangerousGetHandle(), run.PackOffset, bytes, run.DestOffset) == 0)
                {
                    results[r] = bytes;
                    continue;
                }

                var errno = Marshal.GetLastPInvokeError();
                _reason ??= $"cloning blocks from the store's pack failed ({Libc.StrError(errno).ToLowerInvariant()}{(errno == Libc.EXDEV ? ": the store is on another file system" : "")})";
            }

            results[r] = Write(run, dest, scratch(), rel) ? 0 : -1;
        }
    }

    /// <summary>
    /// ok[r]: whether every block of run r reads in full from its pack and hashes to its id. The blocks of all runs,
    /// in order, sixteen at a time: lane i of a batch reads its block <see cref="LaneChunk"/> bytes at a time into
    /// lanes[i × LaneChunk..], and the sixteen hashes advance together.
    /// </summary>
    private void Check(ReadOnlySpan<Run> runs, Span<bool> ok, Span<byte> lanes)
    {
        ok.Fill(true);
        Span<Sha256.Hasher> hashers = stackalloc Sha256.Hasher[Sha256.Lanes];
        Span<int> lengths = stackalloc int[Sha256.Lanes];
        Span<(int Run, int Block, long At)> lane = stackalloc (int, int, long)[Sha256.Lanes];
        Span<bool> read = stackalloc bool[Sha256.Lanes];
        Span<byte> digest = stackalloc byte[Sha256.HashSize];
        var packs = new SafeFileHandle?[Sha256.Lanes];
        int r = 0, b = 0;
        var at = 0L;
        while (r < runs.Length)
        {
            var n = 0;
            var longest = 0;
            for (; n < Sha256.Lanes && r < runs.Length; n++)
            {
                lane[n] = (r, b, runs[r].PackOffset + at);
                packs[n] = Pack(runs[r].PackId);
                read[n] = packs[n] is not null;
                hashers[n] = new Sha256.Hasher();
                longest = Math.Max(longest, runs[r].Blocks[b].RawLength);
                at += runs[r].Blocks[b].RawLength;
                if (++b == runs[r].Blocks.Count)
                {
                    (r, b, at) = (r + 1, 0, 0);
                }
            }

            for (var pos = 0; pos < longest; pos += LaneChunk)
            {
                for (var i = 0; i < n; i++)
                {
                    var length = runs[lane[i].Run].Blocks[lane[i].Block].RawLength;
                    var k = read[i] ? Math.Clamp(length - pos, 0, LaneChunk) : 0;
                    if (k > 0 && PackReader.ReadFully(packs[i]!, lanes.Slice(i * LaneChunk, k), lane[i].At + pos) != k)
                    {
                        (read[i], k) = (false, 0);
                    }

                    lengths[i] = k;
                }

                Sha256.Hasher.AppendEach(hashers[..n], lanes, LaneChunk, lengths[..n]);
            }

            for (var i = 0; i < n; i++)
            {
                hashers[i].Finish(digest);
                if (!read[i] || !digest.SequenceEqual(runs[lane[i].Run].Blocks[lane[i].Block].Id.Bytes))
                {
                    ok[lane[i].Run] = false;
                }
            }
        }
    }

    /// <summary>Writes <paramref name="run"/>'s blocks read from the pack, each checked by its SHA-256 first; false when one does not hash to its id.</summary>
    private bool Write(in Run run, SafeFileHandle dest, byte[] scratch, string rel)
    {
        if (Pack(run.PackId) is not { } pack)
        {
            return false;
        }

        Span<byte> hash = stackalloc byte[Sha256.HashSize];
        long at = 0;
        foreach (var loc in run.Blocks)
        {
            var block = scratch.AsSpan(0, loc.RawLength);
            if (PackReader.ReadFully(pack, block, run.PackOffset + at) != block.Length)
            {
                return false;
            }

            Sha256.HashData(block, hash);
            if (!hash.SequenceEqual(loc.Id.Bytes))
            {
                return false;
            }

            SafeTreeWriter.Write(dest, block, run.DestOffset + at, rel);
            at += loc.RawLength;
        }

        return true;
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
        var result = new List<(long, long, int)>(32); // a group (at most 1 MiB) in blocks of up to 128 KiB: no regrowing
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
