namespace DiffKeeper.Capture.Tests;

/// <summary>A batch whose exports differ from the truth: the seed, the mismatches and the script.</summary>
public sealed class ConformanceException(Backend backend, Batch batch, List<Mismatch> problems)
    : Exception($"{backend}: {problems.Count} mismatches in batch seed {batch.Seed}:\n  " + string.Join("\n  ", problems.Take(15)) + "\n" + batch);
