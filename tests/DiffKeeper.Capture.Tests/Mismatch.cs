namespace DiffKeeper.Capture.Tests;

/// <summary>One mismatch between an export and the truth, with the history it is in (-1: the whole recording).</summary>
public sealed record Mismatch(int History, string Moment, string Detail)
{
    public override string ToString() => $"{(History < 0 ? "recording" : Batch.Dir(History))} at {Moment}: {Detail}";
}
