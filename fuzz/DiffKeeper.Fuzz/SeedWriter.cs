using System.Buffers.Binary;
using System.Diagnostics;
using System.Threading.Channels;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Ebpf;
using DiffKeeper.Core;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Codecs;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Fuzz;

/// <summary>
/// Writes the seed corpora (fuzz/corpus/README.md says how they were made): the catalog and pack of the base
/// trace as they are, every delta record of the base trace and of a bsdiff-compacted twin with its decoded bases,
/// the extent maps of the base trace's versions, and the ring buffer records of a live eBPF recording of a script.
/// </summary>
public static class SeedWriter
{
    private const int MaxSeeds = 6;

    public static void Write(string baseDir, string corpusDir, string bsdiffTraceDir)
    {
        Put(corpusDir, "catalog", "trace.db", File.ReadAllBytes(Path.Combine(baseDir, "catalog.db")));
        var pack = Directory.EnumerateFiles(Path.Combine(baseDir, "packs"), "*.pack", SearchOption.AllDirectories).Single();
        Put(corpusDir, "pack", "trace.pack", File.ReadAllBytes(pack));
        Deltas(baseDir, corpusDir, "zstd-delta", BlobCodec.ZstdDelta);
        Deltas(bsdiffTraceDir, corpusDir, "bsdiff", BlobCodec.BsDiff);

        using (var reader = TraceReader.Open(baseDir))
        {
            var maps = reader.AllVersions().Where(v => v.Extents is { Length: > 0 })
                .Select(v => ExtentMapTarget.Input(v.Size, v.Extents)).DistinctBy(Convert.ToHexString).Take(MaxSeeds).ToList();
            for (var i = 0; i < maps.Count; i++)
            {
                Put(corpusDir, "extent-map", $"version-{i}", maps[i]);
            }
        }

        EbpfRecords(corpusDir);
        EventRuns(corpusDir);
    }

    /// <summary>
    /// Write runs (events.run) as the writer encodes them: appends of 16 bytes, a seek back, a long write, a gap in
    /// time; with every column, and without offset and length (an inexact backend's writes).
    /// </summary>
    public static void EventRuns(string corpusDir)
    {
        foreach (var columns in new[] { 7, 4 })
        {
            var exact = columns == 7;
            var builder = new EventRun.Builder();
            builder.Start(1, new NewEvent(1, 1000, ChangeOp.Write, 1, null, 4112, 7, "w", null, exact ? 4096 : null, exact ? 16 : null));
            long offset = 4112, size = 4112, time = 1000;
            for (var seq = 2; seq < 40; seq++)
            {
                var length = seq == 20 ? 70_000 : 16;
                offset = seq == 30 ? 100 : offset;
                time += seq == 25 ? 5_000_000_000 : 700;
                size = Math.Max(size, offset + length);
                builder.TryAppend(1, new NewEvent(seq, time, ChangeOp.Write, 1, null, size, 7, "w", null, exact ? offset : null, exact ? length : null));
                offset += length;
            }

            Put(corpusDir, "event-run", $"run-{columns}", EventRunTarget.Input(columns, builder.Encoded()));
        }
    }

    private static void Deltas(string traceDir, string corpusDir, string target, BlobCodec codec)
    {
        using var reader = TraceReader.Open(traceDir);
        var n = 0;
        foreach (var loc in reader.AllBlobs().Where(b => b.Codec == codec).Take(MaxSeeds))
        {
            var prefix = loc.Bases.SelectMany(row =>
            {
                var b = reader.Blob(row);
                var bytes = new byte[b.RawLength];
                reader.Blobs.Read(b, bytes);
                return bytes;
            }).ToArray();
            var record = reader.Packs.ReadRecord(loc, new byte[PackFormat.RecordSize(loc.StoredLength)]);
            var payload = record.Slice(PackFormat.RecordHeaderSize, loc.StoredLength);
            Put(corpusDir, target, $"blob-{loc.Id.Short}", DeltaTarget.Input(loc.RawLength, prefix, payload));
            if (codec == BlobCodec.BsDiff && WithRawStreams(payload) is { } raw)
            {
                // Mutations of zstd-compressed streams die in (native) zstd: this twin reaches the control triples.
                Put(corpusDir, target, $"blob-{loc.Id.Short}-raw", DeltaTarget.Input(loc.RawLength, prefix, raw));
            }

            n++;
        }

        if (n == 0)
        {
            throw new InvalidOperationException($"{traceDir} holds no {codec} record to seed {target} with");
        }
    }

    /// <summary>The same bsdiff payload with its three streams stored raw (flags 0); null when one does not decode.</summary>
    private static byte[]? WithRawStreams(ReadOnlySpan<byte> payload)
    {
        var streams = new List<byte[]>();
        var at = BsDiff.HeaderSize;
        for (var i = 0; i < 3; i++)
        {
            var raw = (int)BinaryPrimitives.ReadUInt32LittleEndian(payload[(12 + (8 * i))..]);
            var stored = (int)BinaryPrimitives.ReadUInt32LittleEndian(payload[(16 + (8 * i))..]);
            var bytes = new byte[raw];
            if ((payload[5] & (1 << i)) == 0)
            {
                payload.Slice(at, stored).CopyTo(bytes);
            }
            else if (!Zstd.TryDecompress(payload.Slice(at, stored), bytes, out _))
            {
                return null;
            }

            streams.Add(bytes);
            at += stored;
        }

        var result = new byte[BsDiff.HeaderSize + streams.Sum(x => x.Length)];
        payload[..BsDiff.HeaderSize].CopyTo(result);
        result[5] = 0;
        at = BsDiff.HeaderSize;
        for (var i = 0; i < 3; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(result.AsSpan(16 + (8 * i)), (uint)streams[i].Length);
            streams[i].CopyTo(result, at);
            at += streams[i].Length;
        }

        return result;
    }

    /// <summary>Records a small script with the real eBPF source and keeps its raw records, a few per seed.</summary>
    private static void EbpfRecords(string corpusDir)
    {
        if (EbpfSource.Unavailable() is { } reason)
        {
            throw new InvalidOperationException($"cannot seed ebpf-record: {reason}");
        }

        var work = Directory.CreateTempSubdirectory("dk-fuzz-seed-").FullName;
        var records = new List<byte[]>();
        EbpfSource.RecordTap = r =>
        {
            lock (records)
            {
                records.Add(r.ToArray());
            }
        };
        var source = new EbpfSource([work], new PathFilter([work], "/nonexistent-trace", [])) { MaxPayload = 48 };
        var events = Channel.CreateUnbounded<CaptureEvent>();
        source.Start(events.Writer);
        try
        {
            const string Script = """
                printf 'hello\n' > a.txt; printf 'more\n' >> a.txt; mkdir d; mv a.txt d/b.txt; ln -s d/b.txt s
                ln d/b.txt hard; chmod 600 hard; truncate -s 3 hard; touch c; rm c; rmdir d 2>/dev/null
                mv d e; dd if=/dev/zero of=big bs=4k count=2 status=none; fallocate -p -o 0 -l 4096 big 2>/dev/null
                """;
            using var child = Process.Start(new ProcessStartInfo("/bin/sh", ["-c", Script]) { WorkingDirectory = work })!;
            child.WaitForExit();
        }
        finally
        {
            source.StopAsync().GetAwaiter().GetResult();
            source.DisposeAsync().AsTask().GetAwaiter().GetResult();
            EbpfSource.RecordTap = null;
            Directory.Delete(work, recursive: true);
        }

        // Seeds of up to 2 KB of consecutive records, so each starts from a fresh decoder like the target does.
        var seed = new List<byte[]>();
        var n = 0;
        foreach (var r in records)
        {
            if (seed.Count > 0 && seed.Sum(x => x.Length + 2) + r.Length > 2048)
            {
                Put(corpusDir, "ebpf-record", $"records-{n++}", EbpfRecordTarget.Frame(seed));
                seed.Clear();
            }

            seed.Add(r);
        }

        if (seed.Count > 0)
        {
            Put(corpusDir, "ebpf-record", $"records-{n}", EbpfRecordTarget.Frame(seed));
        }

        Console.WriteLine($"ebpf-record: {records.Count} records of a live recording");
    }

    private static void Put(string corpusDir, string target, string name, byte[] bytes)
    {
        var dir = Path.Combine(corpusDir, target);
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, name), bytes);
    }
}
