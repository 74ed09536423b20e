namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>
/// The keep-mode tests run real Redis and SQLite workloads flat out and SIGKILL them: they run one at a time and
/// never next to the other test classes, whose recordings they would otherwise starve of CPU.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class KeepCollection
{
    public const string Name = "keep mode";
}
