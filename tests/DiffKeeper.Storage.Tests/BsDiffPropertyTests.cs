using DiffKeeper.Storage.Codecs;
using FsCheck;
using FsCheck.Fluent;

namespace DiffKeeper.Storage.Tests;

/// <summary>FsCheck: random edit scripts over random or repetitive bytes round-trip through the bsdiff codec.</summary>
public sealed class BsDiffPropertyTests
{
    [Fact]
    public void Every_version_of_a_random_edit_script_rebuilds_from_the_previous_one()
    {
        var property = Prop.ForAll(Scripts(40_000).ToArbitrary(), script =>
        {
            var previous = script.Start();
            foreach (var version in script.Versions)
            {
                var next = Apply(previous, version);
                var patch = BsDiff.Diff(previous, next);
                if (!BsDiff.Patch(previous, patch, next.Length).AsSpan().SequenceEqual(next))
                {
                    return false;
                }

                previous = next;
            }

            return true;
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(150), property);
    }

    /// <summary>Edit scripts over a start of up to <paramref name="maxSize"/> bytes: 4 versions of 6 edits each.</summary>
    internal static Gen<Script> Scripts(int maxSize) =>
        from size in Gen.Choose(0, maxSize)
        from seed in Gen.Choose(0, 1_000_000)
        from repetitive in Gen.Elements(false, true)
        from versions in Gen.ArrayOf(Gen.ArrayOf(Edits(), 6), 4)
        select new Script(size, seed, repetitive, versions);

    private static Gen<Edit> Edits() =>
        from kind in Gen.Elements(EditKind.Insert, EditKind.Delete, EditKind.Overwrite, EditKind.Truncate, EditKind.Extend)
        from position in Gen.Choose(0, int.MaxValue - 1)
        from length in Gen.Frequency((3, Gen.Choose(1, 64)), (2, Gen.Choose(1, 5_000)))
        from seed in Gen.Choose(0, 1_000_000)
        from copied in Gen.Elements(false, true)
        select new Edit(kind, position, length, seed, copied);

    internal static byte[] Apply(byte[] data, Edit[] edits)
    {
        var list = new List<byte>(data);
        foreach (var edit in edits)
        {
            var bytes = edit.Copied && list.Count > 0
                ? list.GetRange(edit.Seed % list.Count, Math.Min(edit.Length, list.Count - (edit.Seed % list.Count))).ToArray()
                : CodecTests.RandomBytes(edit.Length, edit.Seed);
            var at = edit.Position % (list.Count + 1);
            switch (edit.Kind)
            {
                case EditKind.Insert:
                    list.InsertRange(at, bytes);
                    break;
                case EditKind.Delete:
                    list.RemoveRange(at, Math.Min(edit.Length, list.Count - at));
                    break;
                case EditKind.Overwrite:
                    for (var i = 0; i < bytes.Length && at + i < list.Count; i++)
                    {
                        list[at + i] = bytes[i];
                    }

                    break;
                case EditKind.Truncate:
                    list.RemoveRange(at, list.Count - at);
                    break;
                default:
                    list.AddRange(bytes);
                    break;
            }
        }

        return list.ToArray();
    }

    internal enum EditKind
    {
        Insert,
        Delete,
        Overwrite,
        Truncate,
        Extend,
    }

    internal sealed record Edit(EditKind Kind, int Position, int Length, int Seed, bool Copied);

    internal sealed record Script(int Size, int Seed, bool Repetitive, Edit[][] Versions)
    {
        public byte[] Start()
        {
            var data = CodecTests.RandomBytes(Size, Seed);
            if (Repetitive)
            {
                // Few distinct symbols in long runs: long matches everywhere.
                for (var i = 0; i < data.Length; i++)
                {
                    data[i] = (byte)(data[i] < 8 ? data[i] & 3 : i > 0 ? data[i - 1] : 0);
                }
            }

            return data;
        }

        public override string ToString() =>
            $"{Size} bytes (seed {Seed}{(Repetitive ? ", repetitive" : "")}): " +
            string.Join(" | ", Versions.Select(v => string.Join(", ", v.Select(e => $"{e.Kind} {e.Length}@{e.Position}{(e.Copied ? " copied" : "")}"))));
    }
}
