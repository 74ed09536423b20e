namespace DiffKeeper.Fuzz;

/// <summary>
/// The input is the pack file the base trace's catalog indexes (raw, zstd and zstd-delta records); then every
/// reading command over it, as <see cref="CatalogTarget"/> does.
/// </summary>
public sealed class PackTarget(string baseDir) : FuzzTarget
{
    private readonly TraceSandbox _sandbox = new(baseDir);

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        _sandbox.Put(_sandbox.PackPath, input);
        TraceWalk.Everything(_sandbox);
    }
}
