using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DiffKeeper.Capture;
using DiffKeeper.Capture.Scan;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Maintenance;
using DiffKeeper.Storage.Packs;

// In-process figures of the storage engine on a workload of ../shared/bench/gen_workloads.py (Wn/vNN/...):
// the time to store each version from the files on disk (one session per version, as `record` does), the time
// of `gc`, the bytes stored, and the time to rebuild the first and the last version (median of 5). One JSON
// object on stdout. Usage: DiffKeeper.Bench WORKLOAD_DIR SCRATCH_DIR [--delta zstd|bsdiff|none] [--rebuild-bound K] [--snapshot-interval N]
if (args.Length < 2)
{
    Console.Error.WriteLine("usage: DiffKeeper.Bench WORKLOAD_DIR SCRATCH_DIR [--delta zstd|bsdiff|none] [--rebuild-bound K] [--snapshot-interval N]");
    return 2;
}

var workload = Path.GetFullPath(args[0]);
var scratch = Path.GetFullPath(args[1]);
var delta = Option("--delta", "zstd");
int? interval = Option("--snapshot-interval", "") is { Length: > 0 } n ? int.Parse(n, CultureInfo.InvariantCulture) : null;
var bound = double.Parse(Option("--rebuild-bound", RebuildCost.DefaultBound.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
var versions = Directory.GetDirectories(workload, "v*").Order(StringComparer.Ordinal).ToList();
var live = Path.Combine(scratch, "live");
var trace = Path.Combine(scratch, "trace");
var output = Path.Combine(scratch, "out");
foreach (var d in new[] { live, trace, output })
{
    if (Directory.Exists(d))
    {
        Directory.Delete(d, recursive: true);
    }
}

Directory.CreateDirectory(live);
var storeMs = new List<double>();
long raw = 0;
foreach (var v in versions)
{
    Mirror(v, live); // untimed: the live directory always has the same path, as a recorded tree does
    var clock = Stopwatch.StartNew();
    raw += StoreVersion(trace, live);
    storeMs.Add(clock.Elapsed.TotalMilliseconds);
}

var packsBefore = PackBytes(trace);
var gcClock = Stopwatch.StartNew();
var gc = delta == "none" ? null : StoreMaintenance.Run(trace, new MaintenanceOptions(
    delta == "bsdiff" ? BlobCodec.BsDiff : BlobCodec.ZstdDelta, interval) { RebuildBound = bound }, DateTimeOffset.UtcNow);
var gcMs = gcClock.Elapsed.TotalMilliseconds;

double Rebuild(long session)
{
    var samples = new List<double>();
    using var reader = TraceReader.Open(trace);
    var s = reader.Session(session);
    for (var i = 0; i < 5; i++)
    {
        var clock = Stopwatch.StartNew();
        Materializer.Export(reader, s, reader.MaxSeq(s), output, force: true);
        samples.Add(clock.Elapsed.TotalMilliseconds);
    }

    return Median(samples);
}

var rebuildLast = Rebuild(versions.Count);
var rebuildFirst = Rebuild(1);
using var stdout = Console.OpenStandardOutput();
using (var j = new Utf8JsonWriter(stdout))
{
    j.WriteStartObject();
    j.WriteString("workload", Path.GetFileName(workload));
    j.WriteString("delta", delta);
    j.WriteNumber("snapshot_interval", interval);
    j.WriteNumber("versions", versions.Count);
    j.WriteNumber("raw_bytes", raw);
    j.WriteNumber("store_v0_ms", Math.Round(storeMs[0], 2));
    j.WriteNumber("store_vk_median_ms", Math.Round(Median(storeMs.Skip(1).ToList()), 2));
    j.WriteNumber("pack_bytes_before_gc", packsBefore);
    j.WriteNumber("gc_ms", Math.Round(gcMs, 1));
    j.WriteNumber("pack_bytes", PackBytes(trace));
    j.WriteNumber("catalog_bytes", new FileInfo(Path.Combine(trace, "catalog.db")).Length);
    j.WriteNumber("deltas", gc?.Compaction?.Encoded ?? 0);
    j.WriteNumber("rebuild_last_ms", Math.Round(rebuildLast, 2));
    j.WriteNumber("rebuild_first_ms", Math.Round(rebuildFirst, 2));
    j.WriteNumber("peak_rss_mib", Math.Round(Process.GetCurrentProcess().PeakWorkingSet64 / 1048576.0, 1));
    j.WriteEndObject();
}

stdout.Write("\n"u8);
return 0;

string Option(string name, string fallback)
{
    var i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
}

static double Median(List<double> xs)
{
    if (xs.Count == 0)
    {
        return 0;
    }

    xs.Sort();
    return xs.Count % 2 == 1 ? xs[xs.Count / 2] : (xs[(xs.Count / 2) - 1] + xs[xs.Count / 2]) / 2;
}

static long PackBytes(string trace) =>
    Directory.EnumerateFiles(Path.Combine(trace, "packs"), "*.pack", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);

// One session holding every entry under the root as its baseline, the way `record` stores existing files.
static long StoreVersion(string trace, string root)
{
    using var w = TraceWriter.Open(trace);
    var sid = w.BeginSession("bench", root, "scan", DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() * 1_000_000, [root], out var roots);
    var filter = new PathFilter([root], trace, []);
    long raw = 0;
    foreach (var (rel, st) in TreeWalker.Walk(root, 0, filter))
    {
        var pathId = w.PathId(roots[0], rel);
        switch (st.Kind)
        {
            case EntryKind.File:
                using (var h = File.OpenHandle(Path.Combine(root, rel)))
                {
                    var c = FileIngest.Ingest(w, h, st.Size, parallel: true);
                    w.AddVersion(sid, new NewVersion(pathId, 0, 0, EntryKind.File, st.Mode, st.Uid, st.Gid, st.MtimeNs, c.Size, c.ContentId, null, c.Extents));
                    raw += c.Size;
                }

                break;
            case EntryKind.Directory:
                w.AddVersion(sid, new NewVersion(pathId, 0, 0, EntryKind.Directory, st.Mode, st.Uid, st.Gid, st.MtimeNs, 0, null, null, null));
                break;
        }
    }

    w.AddEvent(sid, new NewEvent(1, 0, ChangeOp.Exit, null, null, 0, null, null, "bench"));
    w.FinishSession(sid, 0, 0, 0);
    return raw;
}

// Makes dst hold exactly src's files (copy, then delete what src lacks), so dst keeps its own path.
static void Mirror(string src, string dst)
{
    var wanted = new HashSet<string>(StringComparer.Ordinal);
    foreach (var file in Directory.EnumerateFiles(src, "*", SearchOption.AllDirectories))
    {
        var rel = Path.GetRelativePath(src, file);
        wanted.Add(rel);
        var target = Path.Combine(dst, rel);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        File.Copy(file, target, overwrite: true);
    }

    foreach (var file in Directory.EnumerateFiles(dst, "*", SearchOption.AllDirectories).ToList())
    {
        if (!wanted.Contains(Path.GetRelativePath(dst, file)))
        {
            File.Delete(file);
        }
    }
}
