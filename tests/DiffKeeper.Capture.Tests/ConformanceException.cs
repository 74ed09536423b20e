namespace DiffKeeper.Capture.Tests;

/// <summary>
/// A batch whose exports differ from the truth: the seed, the mismatches and the script. The backend and seed are
/// printed again on the last line, because a CI log that keeps only the tail of a long script (names beyond PATH_MAX
/// run to kilobytes) would otherwise lose them.
/// </summary>
public sealed class ConformanceException(Backend backend, Batch batch, List<Mismatch> problems)
    : Exception($"{backend}: {problems.Count} mismatches in batch seed {batch.Seed}:\n  " + string.Join("\n  ", problems.Take(15)) + "\n" + batch +
                $"(end of the script of {backend}, batch seed {batch.Seed}; replay with DIFFKEEPER_CONFORM_SEED={batch.Seed})");
