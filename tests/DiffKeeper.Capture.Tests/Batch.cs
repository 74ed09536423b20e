using System.Globalization;
using System.Text;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// Histories recorded together, each in its own directory h0, h1, ... of the watched tree: burst N of every
/// history runs, then one quiet gap, so one export per moment checks every history at once.
/// </summary>
public sealed record Batch(int Seed, History[] Histories)
{
    public static Batch Generate(int seed, int count, int size, Features features)
    {
        var r = new Random(seed);
        return new Batch(seed, Enumerable.Range(0, count).Select(_ => HistoryGenerator.Generate(r.Next(), size, features)).ToArray());
    }

    public static string Dir(int history) => "h" + history.ToString(CultureInfo.InvariantCulture);

    /// <summary>The script of the entries made before the recording, ending with a gap (its snapshot is the baseline).</summary>
    public string BaselineScript()
    {
        var sb = new StringBuilder();
        for (var h = 0; h < Histories.Length; h++)
        {
            sb.Append("hist ").Append(Dir(h)).Append('\n');
            foreach (var op in Histories[h].Baseline)
            {
                sb.Append(op.Line(Dir(h))).Append('\n');
            }
        }

        return sb.Append("gap 0\n").ToString();
    }

    /// <summary>The recorded script, and for each operation in the order it runs (numbered from 1) the history it belongs to.</summary>
    public (string Script, List<int> OpHistory) Script(TimeSpan gap)
    {
        var sb = new StringBuilder();
        var owners = new List<int>();
        var bursts = Histories.Max(h => h.Bursts.Length);
        for (var b = 0; b < bursts; b++)
        {
            for (var h = 0; h < Histories.Length; h++)
            {
                if (b >= Histories[h].Bursts.Length)
                {
                    continue;
                }

                sb.Append("hist ").Append(Dir(h)).Append('\n');
                foreach (var op in Histories[h].Bursts[b])
                {
                    sb.Append(op.Line(Dir(h))).Append('\n');
                    owners.Add(h);
                }
            }

            sb.Append("gap ").Append(((long)gap.TotalMilliseconds).ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        return (sb.ToString(), owners);
    }

    public override string ToString()
    {
        var sb = new StringBuilder().Append("batch seed ").Append(Seed).Append(", ").Append(Histories.Length).Append(" histories\n");
        for (var h = 0; h < Histories.Length; h++)
        {
            sb.Append(Dir(h)).Append(":\n").Append(Histories[h]);
        }

        return sb.ToString();
    }
}
