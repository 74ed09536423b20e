using System.Buffers;
using System.Buffers.Binary;
using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Storage;

/// <summary>One damaged version: which path, which version, which blob and why.</summary>
public sealed record Damage(long SessionId, long VersionId, long Seq, string Path, string? BlobId, string Reason);

public sealed record VerifyReport(int Packs, long Blobs, long BlobBytes, long Versions, IReadOnlyList<Damage> Damages, IReadOnlyList<string> Problems)
{
    public bool Ok => Damages.Count == 0 && Problems.Count == 0;
}

/// <summary>
/// Re-reads every pack record (magic, CRC-32C, codec, SHA-256 of the decoded bytes) and checks every version:
/// its extent map decodes, every blob it names exists and is intact, and its extents hash to its content id.
/// Reads only; safe while a recording runs.
/// </summary>
public static class TraceVerifier
{
    /// <param name="readData">
    /// Decode every blob (zstd, delta chains) and re-hash its bytes. Without it each record is still read whole
    /// and its CRC-32C, header and delta base digest checked, which finds flipped bits, truncated or missing packs
    /// and wrong delta bases, but not a bug that wrote wrong bytes with a right checksum.
    /// </param>
    public static VerifyReport Verify(TraceReader reader, bool readData = true, IProgress<long>? progress = null)
    {
        using var snapshot = reader.Snapshot();

        // Values outside their domain stop verify here: every later check reads rows through the same rules.
        var problems = reader.DomainProblems();
        if (problems.Count == 0)
        {
            problems.AddRange(reader.EventRunProblems());
        }

        if (problems.Count > 0)
        {
            return new VerifyReport(0, 0, 0, 0, [], problems);
        }

        var packs = reader.PacksCommitted();
        var packSizes = new Dictionary<long, long?>();
        foreach (var (id, committed) in packs)
        {
            var path = Path.Combine(reader.TraceDir, PackFormat.RelativePath(id));
            long? length = null;
            try
            {
                length = TraceFile.Length(path);
            }
            catch (DiffKeeperException e) when (e.Code == ExitCode.Corrupt)
            {
                problems.Add($"{PackFormat.RelativePath(id)} is not a regular file");
            }

            packSizes[id] = length;
            if (length is null)
            {
                problems.Add($"{PackFormat.RelativePath(id)} is missing");
            }
            else if (length < committed)
            {
                problems.Add($"{PackFormat.RelativePath(id)} is truncated: {length} bytes, the catalog committed {committed}");
            }
        }

        var bad = new Dictionary<long, (BlobId Id, string Reason)>();
        var all = reader.AllBlobs().ToList();
        long blobs = 0, bytes = 0;
        var buffer = ArrayPool<byte>.Shared.Rent(PackFormat.MaxGroupLength);
        var byRow = all.ToDictionary(b => b.BlobRowId);
        try
        {
            var committedOf = packs.ToDictionary(p => p.Id, p => p.CommittedSize);
            foreach (var loc in all)
            {
                blobs++;
                bytes += loc.StoredLength;
                if (loc.IsSlice)
                {
                    // No record of its own: its group must be a group row that holds its bytes; --read-data decodes
                    // the group (once, cached) and checks the member's own SHA-256.
                    if (SliceProblem(loc, byRow) is { } problem)
                    {
                        bad[loc.BlobRowId] = (loc.Id, $"blob {loc.Id.Short} is damaged: {problem}");
                    }
                    else if (readData)
                    {
                        try
                        {
                            reader.Blobs.Read(loc, buffer.AsSpan(0, loc.RawLength));
                        }
                        catch (BlobDamagedException e)
                        {
                            bad[loc.BlobRowId] = (loc.Id, e.Message);
                        }
                    }

                    progress?.Report(blobs);
                    continue;
                }

                // A record must lie below its pack's committed size: a writer cuts every pack back to it.
                if (!committedOf.TryGetValue(loc.PackId, out var committed))
                {
                    bad[loc.BlobRowId] = (loc.Id, $"blob {loc.Id.Short} is damaged: its pack {PackFormat.RelativePath(loc.PackId)} is not in the catalog's packs table");
                    continue;
                }

                if (loc.Offset + PackFormat.RecordSize(loc.StoredLength) > committed)
                {
                    bad[loc.BlobRowId] = (loc.Id, $"blob {loc.Id.Short} is damaged: its record at offset {loc.Offset} ends beyond the committed size {committed} of {PackFormat.RelativePath(loc.PackId)}");
                    continue;
                }

                try
                {
                    reader.Packs.CheckFraming(loc, BaseDigest(loc, byRow)); // the CRC, which a decoding read skips
                    if (readData)
                    {
                        reader.Blobs.Read(loc, buffer.AsSpan(0, Math.Clamp(loc.RawLength, 0, PackFormat.MaxRawFor(loc.Codec))));
                    }
                }
                catch (BlobDamagedException e)
                {
                    bad[loc.BlobRowId] = (loc.Id, e.Message);
                }
                catch (BlobMissingException e)
                {
                    bad[loc.BlobRowId] = (loc.Id, $"blob {loc.Id.Short} is damaged: its delta base (blob row {e.RowId}) is not in the catalog");
                }

                progress?.Report(blobs); // after every blob: the reporter decides how often to show it
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        // A delta over a damaged base is damaged too (decoding finds that; the framing check alone does not).
        for (var changed = true; changed;)
        {
            changed = false;
            foreach (var loc in all)
            {
                if (loc.HasBases && !bad.ContainsKey(loc.BlobRowId) && loc.Bases.FirstOrDefault(bad.ContainsKey, -1) is var b and not -1)
                {
                    bad[loc.BlobRowId] = (loc.Id, $"blob {loc.Id.Short} is damaged: its {(loc.IsSlice ? "group" : "delta base")} {bad[b].Id.Short} is damaged");
                    changed = true;
                }
            }
        }

        var sessions = reader.Sessions().ToDictionary(s => s.Id);
        var damages = new List<Damage>();
        var used = new HashSet<long>();
        long versions = 0;
        foreach (var v in reader.AllVersions())
        {
            versions++;
            if (v.Kind != EntryKind.File)
            {
                continue;
            }

            var path = sessions.TryGetValue(v.SessionId, out var s) ? TraceReader.DisplayPath(s, v.RootId, v.Rel) : v.Rel;
            if (v.Pruned)
            {
                continue;
            }

            if (v.Extents is null || v.ContentId is null || !ExtentMap.TryDecode(v.Extents, v.Size, out var extents))
            {
                damages.Add(new Damage(v.SessionId, v.Id, v.Seq, path, null, "its extent map is malformed"));
                continue;
            }

            var hashed = new ExtentMap.ContentHasher();
            var broken = false;
            foreach (var e in extents)
            {
                if (!byRow.TryGetValue(e.BlobRowId, out var blob))
                {
                    damages.Add(new Damage(v.SessionId, v.Id, v.Seq, path, null, $"it references blob row {e.BlobRowId}, which the catalog lacks"));
                    broken = true;
                    break;
                }

                var id = blob.Id;

                if (blob.RawLength != e.Length)
                {
                    damages.Add(new Damage(v.SessionId, v.Id, v.Seq, path, id.ToHex(), $"its extent at offset {e.Offset} is {e.Length} bytes, but blob {id.Short} holds {blob.RawLength}"));
                    broken = true;
                    break;
                }

                if (bad.TryGetValue(e.BlobRowId, out var why))
                {
                    damages.Add(new Damage(v.SessionId, v.Id, v.Seq, path, why.Id.ToHex(), why.Reason));
                    broken = true;
                }

                used.Add(e.BlobRowId);
                hashed.Add(e.Offset, e.Length, id);
            }

            if (!broken && !hashed.Finish(v.Size).AsSpan().SequenceEqual(v.ContentId))
            {
                damages.Add(new Damage(v.SessionId, v.Id, v.Seq, path, null, "its extents do not hash to its content id"));
            }
        }

        foreach (var session in sessions.Values)
        {
            MomentCheck.Session(reader, session, damages);
        }

        CheckUnnamedRecords(reader, packs, packSizes, all, problems);

        // A damaged blob that no version uses loses nothing, but the pack is damaged all the same (a failing disk
        // does not pick which records to flip): it is reported, and verify fails.
        foreach (var loc in all)
        {
            if (bad.TryGetValue(loc.BlobRowId, out var why) && !used.Contains(loc.BlobRowId))
            {
                problems.Add($"{PackFormat.RelativePath(loc.PackId)} at offset {loc.Offset}: {why.Reason} (no version uses it)");
            }
        }

        return new VerifyReport(packs.Count, blobs, bytes, versions, damages, problems);
    }

    /// <summary>
    /// Pack bytes below the committed size that no blob row names (records of a read that was superseded, or of a
    /// repack that moved a row) are still records: each is framed by its own header and checked like any record
    /// (<see cref="PackReader.CheckFraming"/>: magic, lengths, CRC-32C), so a flipped bit anywhere in a pack is
    /// found, not only in the records the catalog points at.
    /// </summary>
    private static void CheckUnnamedRecords(TraceReader reader, IReadOnlyList<(long Id, long Committed)> packs, Dictionary<long, long?> packSizes, List<BlobLocation> all, List<string> problems)
    {
        var byPack = all.GroupBy(b => b.PackId).ToDictionary(g => g.Key, g => g.Select(b => (b.Offset, End: b.Offset + PackFormat.RecordSize(b.StoredLength))).OrderBy(r => r.Offset).ToList());
        foreach (var (id, committed) in packs)
        {
            var rel = PackFormat.RelativePath(id);
            var path = Path.Combine(reader.TraceDir, rel);
            if (packSizes.GetValueOrDefault(id) is not { } length || length < committed)
            {
                continue; // reported above
            }

            using var handle = TraceFile.OpenRegular(path);
            var fileHeader = new byte[PackFormat.HeaderSize];
            if (committed >= PackFormat.HeaderSize && (RandomAccess.Read(handle, fileHeader, 0) < fileHeader.Length || !fileHeader.AsSpan(0, 8).SequenceEqual(PackFormat.FileMagic)))
            {
                problems.Add($"{rel}: its file header is damaged");
            }

            var pos = (long)PackFormat.HeaderSize;
            foreach (var (offset, end) in byPack.GetValueOrDefault(id) ?? [])
            {
                if (offset > pos)
                {
                    WalkGap(reader.Packs, handle, id, pos, Math.Min(offset, committed), problems);
                }

                pos = Math.Max(pos, end);
            }

            if (committed > pos)
            {
                WalkGap(reader.Packs, handle, id, pos, committed, problems);
            }
        }
    }

    private static void WalkGap(PackReader packs, SafeFileHandle handle, long packId, long from, long to, List<string> problems)
    {
        var header = new byte[PackFormat.RecordHeaderSize];
        for (var pos = from; pos < to;)
        {
            string? why = null;
            var stored = 0;
            if (to - pos < PackFormat.RecordSize(0) || RandomAccess.Read(handle, header, pos) < header.Length)
            {
                why = "bytes that are not a whole record";
            }
            else if ((stored = BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(12))) < 0 || pos + PackFormat.RecordSize(stored) > to)
            {
                why = $"a record header with an impossible stored length ({stored})";
            }
            else
            {
                // The record as its own header describes it: the framing check then tests magic, lengths and CRC.
                var loc = new BlobLocation(-1, new BlobId(header[16..48]), packId, pos,
                    BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(8)), stored, (BlobCodec)header[4], []);
                try
                {
                    packs.CheckFraming(loc);
                }
                catch (BlobDamagedException e)
                {
                    why = e.Message;
                }
            }

            if (why is not null)
            {
                problems.Add($"{PackFormat.RelativePath(packId)} at offset {pos}: {why} in bytes no blob row names (nothing recorded is lost)");
                return;
            }

            pos += PackFormat.RecordSize(stored);
        }
    }

    /// <summary>What is wrong with a slice's place in its group, read from the catalog alone; null when nothing.</summary>
    private static string? SliceProblem(in BlobLocation loc, Dictionary<long, BlobLocation> byRow)
    {
        if (loc.Bases.Length != 1)
        {
            return $"a slice names {loc.Bases.Length} groups";
        }

        if (!byRow.TryGetValue(loc.Bases[0], out var group))
        {
            return $"its group (blob row {loc.Bases[0]}) is not in the catalog";
        }

        if (group.Codec != BlobCodec.Group)
        {
            return $"its group {group.Id.Short} has codec {(int)group.Codec}, not a group";
        }

        return loc.Offset + loc.RawLength > group.RawLength
            ? $"its bytes ({loc.RawLength} at {loc.Offset}) lie outside its group {group.Id.Short} ({group.RawLength} bytes)"
            : null;
    }

    private static byte[] BaseDigest(in BlobLocation loc, Dictionary<long, BlobLocation> byRow)
    {
        if (!loc.IsDelta)
        {
            return [];
        }

        var ids = new List<BlobId>();
        foreach (var row in loc.Bases)
        {
            if (!byRow.TryGetValue(row, out var b))
            {
                throw new BlobMissingException(row);
            }

            ids.Add(b.Id);
        }

        return PackFormat.BaseDigest(ids);
    }
}
