using System.Diagnostics;
using System.Globalization;
using DiffKeeper.Bench;
using DiffKeeper.Storage.Codecs;

// Times the bsdiff codec in process on W1/W2-shaped data (random bytes, regions rewritten in place, 4 KiB
// insertions and deletions), or on given pairs of files (RUNS OLD NEW [OLD NEW ...]), next to zstd with the old
// bytes as prefix (the store's other delta codec).
// Each figure: median wall ms (min) / median CPU ms of the thread, of N runs after one warm-up. The machine is
// shared: wall time includes waiting for a core, CPU time does not (cache contention still shows in both).
var runs = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 15;
Console.WriteLine($"runs per figure: {runs}; {Environment.ProcessorCount} cores; {RuntimeInfoLine()}");
Console.WriteLine("each time: median wall ms (min wall ms) / median CPU ms of the benchmark thread");
Console.WriteLine();
Console.WriteLine("| input | SA-IS ms | bsdiff Diff ms | Patch ms | patch bytes | zstd -3 with prefix ms | its bytes |");
Console.WriteLine("|---|---:|---:|---:|---:|---:|---:|");
if (args.Length >= 3)
{
    // Pairs of files: OLD NEW [OLD NEW ...], e.g. consecutive versions of a workload.
    for (var i = 1; i + 1 < args.Length; i += 2)
    {
        Row($"{args[i]} → {args[i + 1]}", (File.ReadAllBytes(args[i]), File.ReadAllBytes(args[i + 1])));
    }

    return;
}

Row("256 KiB (max chunk), 10% rewritten", Rewrite(Random(256 << 10, 1), 0.10, 2));
Row("1 MiB (W1 shape), 10% rewritten", Rewrite(Random(1 << 20, 3), 0.10, 4));
Row("10 MiB (W2 shape), 2% + 4 KiB shifts", Shift(Rewrite(Random(10 << 20, 5), 0.02, 6), 7));
return;

void Row(string name, (byte[] Old, byte[] New) pair)
{
    var (old, updated) = pair;
    var sa = new int[old.Length];
    var saMs = Time(() => SuffixArray.Build(old, sa));
    byte[] patch = [];
    var diffMs = Time(() => patch = BsDiff.Diff(old, updated));
    var output = new byte[updated.Length];
    var patchMs = Time(() => BsDiff.Patch(old, patch, output));
    if (!output.AsSpan().SequenceEqual(updated))
    {
        throw new InvalidOperationException("round trip failed");
    }

    var buffer = new byte[Zstd.CompressBound(updated.Length)];
    var zstdBytes = 0;
    var zstdMs = Time(() => zstdBytes = Zstd.CompressWithPrefix(updated, old, buffer, 3));
    Console.WriteLine($"| {name} | {saMs} | {diffMs} | {patchMs} | {patch.Length:N0} | {zstdMs} | {zstdBytes:N0} |");
}

string Time(Action action)
{
    action();
    var samples = new double[runs];
    var cpu = new double[runs];
    for (var i = 0; i < runs; i++)
    {
        var cpu0 = ThreadCpuClock.NowMilliseconds();
        var watch = Stopwatch.StartNew();
        action();
        samples[i] = watch.Elapsed.TotalMilliseconds;
        cpu[i] = ThreadCpuClock.NowMilliseconds() - cpu0;
    }

    Array.Sort(samples);
    Array.Sort(cpu);
    return string.Create(CultureInfo.InvariantCulture, $"{samples[runs / 2]:F1} ({samples[0]:F1}) / {cpu[runs / 2]:F1}");
}

static byte[] Random(int n, int seed)
{
    var b = new byte[n];
    new Random(seed).NextBytes(b);
    return b;
}

static (byte[] Old, byte[] New) Rewrite(byte[] old, double fraction, int seed)
{
    var random = new Random(seed);
    var updated = (byte[])old.Clone();
    var stripe = old.Length / 10;
    var length = (int)(old.Length * fraction / 10);
    for (var r = 0; r < 10; r++)
    {
        random.NextBytes(updated.AsSpan((r * stripe) + random.Next(stripe - length), length));
    }

    return (old, updated);
}

static (byte[] Old, byte[] New) Shift((byte[] Old, byte[] New) pair, int seed)
{
    var random = new Random(seed);
    var list = new List<byte>(pair.New);
    list.InsertRange(random.Next(list.Count), Random(4096, seed));
    list.RemoveRange(random.Next(list.Count - 4096), 4096);
    return (pair.Old, list.ToArray());
}

static string RuntimeInfoLine() => System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription;
