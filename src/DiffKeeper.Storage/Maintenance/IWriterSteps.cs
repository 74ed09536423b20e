namespace DiffKeeper.Storage.Maintenance;

/// <summary>
/// How a maintenance pass reaches the trace's one writer: it hands over short steps, each one catalog transaction.
/// Contract: <see cref="Run{T}"/> runs the step on the thread that owns the writer, while nothing of the owner's
/// own work is pending in the writer (so the step's transaction holds only the step), and returns its result; the
/// step commits before it returns (a step that throws is rolled back). Steps run in the order they were handed
/// over and never overlap. Each step must keep the store valid on its own: a kill -9 may fall between any two.
/// When the owner stops taking steps, <see cref="Run{T}"/> throws <see cref="OperationCanceledException"/>.
/// </summary>
public interface IWriterSteps
{
    /// <summary>Signalled when the owner stops taking steps: long work between steps should stop too.</summary>
    CancellationToken Stopping { get; }

    T Run<T>(string name, Func<TraceWriter, T> step);
}

/// <summary>Runs each step at once on the calling thread, which owns the writer (offline <c>gc</c> and <c>prune</c>).</summary>
public sealed class InlineWriterSteps(TraceWriter writer) : IWriterSteps
{
    public CancellationToken Stopping => CancellationToken.None;

    public T Run<T>(string name, Func<TraceWriter, T> step)
    {
        try
        {
            return step(writer);
        }
        catch
        {
            writer.Rollback();
            throw;
        }
    }
}
