using System.Diagnostics;
using System.Globalization;
using FsCheck;
using FsCheck.Fluent;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// The capture conformance suite (in the manner of restic's backend tests): the same generated histories run
/// against every backend through the real binary, and every export a backend promises (see <see cref="Backend"/>)
/// must equal the executor's ground truth. FsCheck draws the batch seeds; a failing batch shrinks first to the
/// histories that failed, then to a minimal script, which the failure prints with its seed.
/// By default the batches are a fixed set (see FixedBatches): CI replays the same 200 histories per backend every run.
/// DIFFKEEPER_SOAK=N runs N histories per backend instead of 200, from new seeds; DIFFKEEPER_CONFORM_RANDOM=1 draws
/// new seeds for the default 200; DIFFKEEPER_CONFORM_SEED=S replays one batch; DIFFKEEPER_CONFORM_KEEP=DIR keeps the trace, truth and script of a failing run there;
/// DIFFKEEPER_CONFORM_BACKENDS=ebpf,inotify runs only those backends;
/// DIFFKEEPER_CONFORM_FEATURES=InvalidUtf8Names,BeyondPathMax adds features the binary lacks.
/// </summary>
public sealed class ConformanceTests
{
    private const int BatchSize = 50;

    /// <summary>Where the batches ./test.sh replays come from (per backend: plus the length of its name). Change it to replay others.</summary>
    private const int FixedBatches = 20261206;

    public static TheoryData<string> Backends => ["ebpf", "fanotify", "inotify", "scan"];

    [Theory]
    [MemberData(nameof(Backends))]
    public void Random_histories_export_exactly_what_the_backend_promises(string name)
    {
        var backend = Backend.Named(name);
        if (Environment.GetEnvironmentVariable("DIFFKEEPER_CONFORM_BACKENDS") is { Length: > 0 } only && !only.Split(',').Contains(name))
        {
            Assert.Skip($"DIFFKEEPER_CONFORM_BACKENDS={only} leaves {name} out");
        }

        backend.SkipIfUnavailable();
        var histories = int.TryParse(Environment.GetEnvironmentVariable("DIFFKEEPER_SOAK"), CultureInfo.InvariantCulture, out var soak) ? soak : 200;
        var extra = Enum.TryParse<Features>(Environment.GetEnvironmentVariable("DIFFKEEPER_CONFORM_FEATURES"), out var f) ? f : Features.None;
        var features = (Features.Default & ~backend.KnownFailures) | extra;
        var output = TestContext.Current.TestOutputHelper!;
        var sw = Stopwatch.StartNew();
        var ran = 0;
        var shrinkBudget = new Stopwatch();
        List<Mismatch>? lastFailure = null;

        bool Holds(Batch batch)
        {
            var problems = ConformanceRun.Run(backend, batch);
            ran += batch.Histories.Length;
            if (problems.Count == 0)
            {
                return true;
            }

            if (lastFailure is null)
            {
                shrinkBudget.Start();
            }

            lastFailure = problems;
            throw new ConformanceException(backend, batch, problems);
        }

        IEnumerable<Batch> Shrink(Batch batch)
        {
            // Each candidate is a recording: stop shrinking after 3 minutes with what is already small.
            if (shrinkBudget.Elapsed > TimeSpan.FromMinutes(3) || lastFailure is null)
            {
                yield break;
            }

            var failing = lastFailure.Where(m => m.History >= 0).Select(m => m.History).Distinct().Order().ToList();
            if (batch.Histories.Length > 1 && failing.Count > 0)
            {
                yield return batch with { Histories = [batch.Histories[failing[0]]] };
                yield break;
            }

            if (batch.Histories.Length == 1)
            {
                foreach (var h in batch.Histories[0].Shrink())
                {
                    yield return batch with { Histories = [h] };
                }
            }
        }

        // ./test.sh replays a fixed set of batches (FixedBatches), so a CI run fails only for a change, not for a batch
        // nobody drew before; a soak (DIFFKEEPER_SOAK) or DIFFKEEPER_CONFORM_RANDOM=1 draws new ones, which is how
        // failures are found.
        var random = Environment.GetEnvironmentVariable("DIFFKEEPER_CONFORM_RANDOM") == "1" || soak > 0;
        var fixedBatches = new Random(FixedBatches + name.Length);
        var seeds = Environment.GetEnvironmentVariable("DIFFKEEPER_CONFORM_SEED") is { Length: > 0 } fixedSeed
            ? Gen.Constant(int.Parse(fixedSeed, CultureInfo.InvariantCulture))
            : random ? Gen.Choose(0, int.MaxValue)
            : Gen.Constant(0).Select(_ => fixedBatches.Next());
        var count = Math.Min(BatchSize, histories);
        var arb = Arb.From(seeds.Select(seed => Batch.Generate(seed, count, 24, features)), Shrink);
        var batches = (histories + count - 1) / count;
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(batches).WithQuietOnSuccess(true), Prop.ForAll(arb, Holds));
        output.WriteLine($"{backend}: {ran} histories in {sw.Elapsed.TotalSeconds:0.0} s ({features})");
    }
}
