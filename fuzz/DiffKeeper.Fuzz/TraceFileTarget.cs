using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;

namespace DiffKeeper.Fuzz;

/// <summary>
/// The input is one file of the base trace: the whole catalog.db (SQLite file), beside the base trace's pack
/// (target <c>catalog</c>), or its pack file, under its catalog (target <c>pack</c>: raw, zstd and zstd-delta
/// records). Then what `verify --read-data`, `timeline`, `export` and `show` do with the trace: open, verify, list
/// every event, export every session at its end and read every file's content.
/// </summary>
public sealed class TraceFileTarget(string baseDir, bool pack) : FuzzTarget
{
    private readonly TraceSandbox _sandbox = new(baseDir);

    protected override void Fuzz(ReadOnlySpan<byte> input)
    {
        _sandbox.Put(pack ? _sandbox.PackPath : _sandbox.CatalogPath, input);
        TraceWalk.Everything(_sandbox);
    }
}

/// <summary>What the catalog and pack targets do with a trace: every reading command, through its library calls.</summary>
public static class TraceWalk
{
    public static void Everything(TraceSandbox sandbox)
    {
        using var reader = TraceReader.Open(sandbox.TraceDir);
        TraceVerifier.Verify(reader, readData: true);
        _ = reader.DomainProblems();
        using var snapshot = reader.Snapshot();
        foreach (var session in reader.Sessions())
        {
            foreach (var e in reader.Events(session))
            {
                _ = e.Path;
            }

            var seq = reader.Resolve(session, TimeSpec.End);
            if (session.ContentsNotKept is not null)
            {
                continue;
            }

            Materializer.Export(reader, session, seq, sandbox.OutDir, force: true);
            foreach (var version in reader.StateAt(session, seq))
            {
                if (version.Kind == EntryKind.File)
                {
                    VersionContent.Read(reader, session, version, (_, _) => { });
                }
            }
        }
    }
}
