using System.Globalization;
using System.Text;

namespace DiffKeeper.Capture.Tests;

/// <summary>
/// One operation of a script for <c>dkexec</c> (Executor/dkexec.c). Paths are relative to the history's directory
/// and already %XX-escaped (so a name may hold bytes that are not UTF-8); <see cref="Rest"/> are numbers, modes in octal.
/// </summary>
public sealed record Op(string Name, string[] Paths, string[] Rest, string? Target = null)
{
    /// <summary>
    /// A path that starts with this names an entry outside the watched tree (a sibling of it, shared by the histories
    /// of a batch); <see cref="HistoryMark"/> in it becomes the history's directory name, so histories do not collide.
    /// </summary>
    public const string Outside = "../../out/";

    public const string HistoryMark = "@";

    public string Line(string dir)
    {
        var sb = new StringBuilder(Name);
        if (Target is not null)
        {
            sb.Append(' ').Append(Target);
        }

        foreach (var p in Paths)
        {
            sb.Append(' ').Append(dir).Append('/').Append(p.StartsWith(Outside, StringComparison.Ordinal) ? p.Replace(HistoryMark, dir, StringComparison.Ordinal) : p);
        }

        foreach (var r in Rest)
        {
            sb.Append(' ').Append(r);
        }

        return sb.ToString();
    }

    public override string ToString() => Line(".");
}

/// <summary>
/// What a generated history may contain beyond the basics. Every feature is on unless a backend names it as a
/// known failure (<see cref="Backend.KnownFailures"/>), each with the skipped test that holds its minimal script.
/// </summary>
[Flags]
public enum Features
{
    None = 0,

    /// <summary>Names with bytes that are not UTF-8 (alone, and mixed with spaces and newlines).</summary>
    InvalidUtf8Names = 1,

    /// <summary>25 nested directories of 200-byte names made with mkdirat, and a file in the deepest: beyond PATH_MAX.</summary>
    BeyondPathMax = 2,

    /// <summary>link(): a new name of an existing file.</summary>
    HardLinks = 4,

    /// <summary>renameat2(RENAME_EXCHANGE) (of directories too only with <see cref="DirectoryRenames"/>).</summary>
    Exchange = 8,

    /// <summary>A file created (O_EXCL) with a mode other than 0644, like tar's mode-0 placeholder for a symlink.</summary>
    CreateWithMode = 16,

    /// <summary>A mode change (chmod, fchmod, or fchmod on the fd just written).</summary>
    ModeChanges = 32,

    /// <summary>A directory renamed (then possibly written under or deleted).</summary>
    DirectoryRenames = 64,

    /// <summary>Entries made before the recording (the baseline), later changed by the recorded command.</summary>
    BaselineEntries = 128,

    /// <summary>fallocate(PUNCH_HOLE | KEEP_SIZE).</summary>
    PunchHoles = 256,

    /// <summary>Files that grow past 256 KiB (sparse writes and truncates up to 4 MiB); without it, at most ~200 KiB.</summary>
    LargeFiles = 512,

    /// <summary>Exchanges that move a directory (with <see cref="Exchange"/> and <see cref="DirectoryRenames"/>).</summary>
    DirectoryExchanges = 1024,

    /// <summary>
    /// writev/pwritev (three vectors, at an offset or appended) and fallocate (mode 0), half of them followed at once by
    /// a plain write to the same file, whose carried bytes must not be put on the version stored before.
    /// </summary>
    VectoredWrites = 2048,

    /// <summary>
    /// copy_file_range and sendfile from another file, half of them followed at once by a plain write: no buffer of
    /// the writer holds their bytes, so the recorder reads the file back.
    /// </summary>
    CopiedWrites = 4096,

    /// <summary>
    /// Entries moved out of the watched tree (files, symlinks and whole directories), and files and trees made
    /// outside it (the recorded command writes them there) then moved in, later changed like any other.
    /// </summary>
    TreeMoves = 8192,

    Default = TreeMoves | InvalidUtf8Names | BeyondPathMax | HardLinks | Exchange | DirectoryExchanges | CreateWithMode | ModeChanges | DirectoryRenames | BaselineEntries | PunchHoles | LargeFiles | VectoredWrites | CopiedWrites,
}

/// <summary>
/// One history: entries made before the recording (the baseline), then bursts of operations run with no pause,
/// each followed by a quiet gap.
/// </summary>
public sealed record History(Op[] Baseline, Op[][] Bursts)
{
    public int OpCount => Bursts.Sum(b => b.Length);

    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (var op in Baseline)
        {
            sb.Append("  (baseline) ").Append(op).Append('\n');
        }

        foreach (var burst in Bursts)
        {
            foreach (var op in burst)
            {
                sb.Append("  ").Append(op).Append('\n');
            }

            sb.Append("  gap\n");
        }

        return sb.ToString();
    }

    /// <summary>Smaller histories, most aggressive first: a burst removed, then one operation removed, then the baseline emptied.</summary>
    public IEnumerable<History> Shrink()
    {
        for (var i = 0; i < Bursts.Length; i++)
        {
            if (Bursts.Length > 1)
            {
                yield return this with { Bursts = [.. Bursts.Take(i), .. Bursts.Skip(i + 1)] };
            }
        }

        for (var i = 0; i < Bursts.Length - 1; i++)
        {
            yield return this with { Bursts = [.. Bursts.Take(i), [.. Bursts[i], .. Bursts[i + 1]], .. Bursts.Skip(i + 2)] };
        }

        if (Baseline.Length > 0)
        {
            yield return this with { Baseline = [] };
        }

        for (var b = 0; b < Bursts.Length; b++)
        {
            for (var i = 0; i < Bursts[b].Length; i++)
            {
                var burst = Bursts[b].Where((_, j) => j != i).ToArray();
                if (burst.Length > 0)
                {
                    Op[][] bursts = [.. Bursts];
                    bursts[b] = burst;
                    yield return this with { Bursts = bursts };
                }
            }
        }

        for (var i = 0; i < Baseline.Length; i++)
        {
            yield return this with { Baseline = Baseline.Where((_, j) => j != i).ToArray() };
        }
    }
}

/// <summary>
/// Builds a history from a seed. A model of the tree (kind of each path) keeps most operations valid; an operation
/// that fails anyway is skipped by the executor, whose snapshots are the truth, so the model needs no precision.
/// </summary>
public sealed class HistoryGenerator
{
    private static readonly string[] Names = ["a", "b", "c", "g", "sub", "x%20y", "%C3%A9t%C3%A9", "n%0Al", "-dash", "e"];
    private static readonly string[] FileModes = ["600", "644", "755", "444", "640", "4755"];
    private static readonly string[] DirModes = ["755", "700", "711", "750"];

    private readonly Random _r;
    private readonly Features _features;
    private readonly Dictionary<string, char> _tree = new(StringComparer.Ordinal) { [""] = 'd' };
    private int _fresh;

    // A move into the watched tree ends its burst: what arrives is read after the move, so a change of it (or of a
    // directory above it) before that read would be seen at the move by a backend that promises every operation's
    // moment (eBPF); its bytes were never in an event. ScriptedHistoryTests checks the hint backends with such
    // changes at once.
    private bool _movedIn;

    private HistoryGenerator(int seed, Features features)
    {
        _r = new Random(seed);
        _features = features;
    }

    public static History Generate(int seed, int size, Features features)
    {
        var g = new HistoryGenerator(seed, features);
        var baseline = g.Ops(features.HasFlag(Features.BaselineEntries) ? g._r.Next(0, 3) : 0, baseline: true);
        var bursts = new Op[g._r.Next(1, 4)][];
        for (var i = 0; i < bursts.Length; i++)
        {
            bursts[i] = g.Ops(g._r.Next(1, Math.Max(2, size / 8) + 1), baseline: false);
        }

        return new History(baseline, bursts);
    }

    private Op[] Ops(int n, bool baseline)
    {
        var list = new List<Op>();
        _movedIn = false;
        while (list.Count < n && !_movedIn)
        {
            list.AddRange(Next(baseline));
        }

        return [.. list];
    }

    private string Pick(char kind) => Pick(kind, p => true);

    private string Pick(char kind, Func<string, bool> where)
    {
        var all = _tree.Where(e => e.Value == kind && where(e.Key)).Select(e => e.Key).Order(StringComparer.Ordinal).ToList();
        return all.Count == 0 ? "" : all[_r.Next(all.Count)];
    }

    private string NewName(string dir)
    {
        var pool = Names.ToList();
        if (_features.HasFlag(Features.InvalidUtf8Names))
        {
            pool.Add("bad%FFbyte");
            pool.Add("%80lead");
            pool.Add("s%20p%0A%FE%C3");
        }

        for (var tries = 0; tries < 5; tries++)
        {
            var p = Join(dir, pool[_r.Next(pool.Count)]);
            if (!_tree.ContainsKey(p))
            {
                return p;
            }
        }

        return Join(dir, "n" + _fresh++.ToString(CultureInfo.InvariantCulture));
    }

    private static string Join(string dir, string name) => dir.Length == 0 ? name : dir + "/" + name;

    private static bool Under(string path, string dir) => path == dir || path.StartsWith(dir + "/", StringComparison.Ordinal);

    private string S(long n) => n.ToString(CultureInfo.InvariantCulture);

    private long Len() => _r.Next(4) switch
    {
        0 => _r.Next(0, 8),
        1 => _r.Next(1, 200),
        2 => _r.Next(1, 5000),
        _ => _r.Next(4096, 70000),
    };

    private long Offset(long near) => _r.Next(4) switch
    {
        0 => 0,
        1 => _r.Next(0, (int)Math.Min(near + 1, int.MaxValue)),
        2 => near,
        _ => (1L << (_features.HasFlag(Features.LargeFiles) ? _r.Next(16, 23) : _r.Next(14, 18))) + _r.Next(0, 5000), // sparse: a hole before the data
    };

    private void Move(string from, string to)
    {
        foreach (var key in _tree.Keys.Where(k => Under(k, from)).ToList())
        {
            var kind = _tree[key];
            _tree.Remove(key);
            _tree[to + key[from.Length..]] = kind;
        }
    }

    private void Remove(string path)
    {
        foreach (var key in _tree.Keys.Where(k => Under(k, path)).ToList())
        {
            _tree.Remove(key);
        }
    }

    private Op[] NewFile(string dir)
    {
        var p = NewName(dir);
        _tree[p] = 'f';
        return [new Op("write", [p], [S(Offset(0) * _r.Next(2)), S(Len()), S(_r.Next(1000))])];
    }

    private IEnumerable<Op> Next(bool baseline)
    {
        var file = Pick('f');
        var dir = Pick('d');
        var choice = _r.Next(baseline ? 4 : 26);
        if (file.Length == 0 && choice is >= 4 and < 12)
        {
            choice = 0;
        }

        switch (choice)
        {
            case 0 or 1:
                return NewFile(dir);

            case 2:
            {
                var p = NewName(dir);
                _tree[p] = 'd';
                return [new Op("mkdir", [p], [DirModes[_r.Next(DirModes.Length)]])];
            }

            case 3:
            {
                var p = NewName(dir);
                var q = NewName(p);
                var r = NewName(q);
                _tree[p] = 'd';
                _tree[q] = 'd';
                _tree[r] = 'd';
                return [new Op("mkdirp", [r], [])];
            }

            case 4 or 5:
                return [new Op("write", [file], [S(Offset(2000)), S(Len()), S(_r.Next(1000))])];
            case 6:
                return [new Op("append", [file], [S(Len()), S(_r.Next(1000))])];
            case 7:
                return [new Op("trunc", [file], [S(_r.Next(2) == 0 ? _r.Next(0, 3000) : (1L << _r.Next(12, _features.HasFlag(Features.LargeFiles) ? 23 : 18)) + _r.Next(0, 100))])];
            case 8 when _features.HasFlag(Features.PunchHoles):
                return [new Op("punch", [file], [S(_r.Next(2) == 0 ? 0 : 4096L * _r.Next(0, 16) + _r.Next(0, 2) * 100), S(4096L * _r.Next(1, 8))])];
            case 9 when _features.HasFlag(Features.ModeChanges):
                return [new Op(_r.Next(2) == 0 ? "chmod" : "fchmod", [file], [FileModes[_r.Next(FileModes.Length)]])];
            case 10 when _features.HasFlag(Features.ModeChanges):
                return [new Op("writechmod", [file], [S(Offset(100)), S(Len()), S(_r.Next(1000)), FileModes[_r.Next(FileModes.Length)]])];
            case 11:
            {
                // Rename a file: to a new name, into new directories, or over another file.
                var roll = _r.Next(3);
                var other = Pick('f', f => f != file);
                if (roll == 2 && other.Length > 0)
                {
                    _tree.Remove(file);
                    return [new Op("rename", [file, other], [])];
                }

                if (roll == 1)
                {
                    var nd = NewName(dir);
                    var target = NewName(nd);
                    _tree[nd] = 'd';
                    _tree.Remove(file);
                    _tree[target] = 'f';
                    return [new Op("mkdirp", [nd], []), new Op("rename", [file, target], [])];
                }

                var to = NewName(Pick('d'));
                Move(file, to);
                return [new Op("rename", [file, to], [])];
            }

            case 12 or 13 when _features.HasFlag(Features.DirectoryRenames):
            {
                // Rename a directory to a new name, possibly elsewhere (never into itself).
                var d = Pick('d', k => k.Length > 0);
                if (d.Length == 0)
                {
                    return NewFile(dir);
                }

                var to = NewName(Pick('d', k => !Under(k, d)));
                Move(d, to);
                return [new Op("rename", [d, to], [])];
            }

            case 14 when _features.HasFlag(Features.Exchange):
            {
                var a = _tree.Keys.Where(k => k.Length > 0).Order(StringComparer.Ordinal).ToList();
                if (a.Count < 2)
                {
                    return NewFile(dir);
                }

                var x = a[_r.Next(a.Count)];
                var y = a[_r.Next(a.Count)];
                // An exchange that moves a directory is a directory rename: only where those are generated.
                if (Under(x, y) || Under(y, x) ||
                    (!(_features.HasFlag(Features.DirectoryRenames) && _features.HasFlag(Features.DirectoryExchanges)) && (_tree[x] == 'd' || _tree[y] == 'd')))
                {
                    return NewFile(dir);
                }

                Move(x, "\0tmp");
                Move(y, x);
                Move("\0tmp", y);
                return [new Op("exchange", [x, y], [])];
            }

            case 15:
            {
                var victim = _tree.Where(e => e.Value != 'd').Select(e => e.Key).Order(StringComparer.Ordinal).FirstOrDefault(_ => _r.Next(3) == 0) ?? file;
                _tree.Remove(victim);
                return [new Op("unlink", [victim], [])];
            }

            case 16:
            {
                var d = Pick('d', k => k.Length > 0);
                if (d.Length == 0)
                {
                    return NewFile(dir);
                }

                Remove(d);
                return [new Op("rmr", [d], [])];
            }

            case 17 when _features.HasFlag(Features.ModeChanges):
            {
                var d = Pick('d');
                return [new Op("chmod", [d], [DirModes[_r.Next(DirModes.Length)]])];
            }

            case 18:
            {
                var p = NewName(dir);
                _tree[p] = 'l';
                var target = _r.Next(2) == 0 ? file.Length > 0 ? "../" + file : "missing" : "x%20target/" + S(_r.Next(99));
                return [new Op("symlink", [p], [], target)];
            }

            case 19 when _features.HasFlag(Features.CreateWithMode):
            {
                // tar's placeholder for a symlink: an empty file made with O_EXCL and mode 0, later replaced.
                var p = NewName(dir);
                _tree[p] = 'l';
                return [new Op("create", [p], ["0"]), new Op("unlink", [p], []), new Op("symlink", [p], [], "tar%20target")];
            }

            case 20:
            {
                var p = NewName(dir);
                _tree[p] = 'f';
                return [new Op("create", [p], [_features.HasFlag(Features.CreateWithMode) ? FileModes[_r.Next(FileModes.Length)] : "644"])];
            }

            case 21 when _features.HasFlag(Features.HardLinks):
            {
                var p = NewName(dir);
                _tree[p] = 'f';
                return [new Op("link", [file, p], [])];
            }

            case 22 when _features.HasFlag(Features.BeyondPathMax):
            {
                // 25 nested directories with 200-byte names: longer than PATH_MAX, reachable only by *at calls.
                var p = NewName(dir);
                for (var i = 0; i < 25; i++)
                {
                    p = p + "/" + new string((char)('k' + i % 10), 200);
                }

                return [new Op("mkdirp", [p], []), new Op("write", [p + "/deep"], ["0", S(Len()), S(_r.Next(1000))])];
            }

            case 23 when file.Length > 0 && (_features.HasFlag(Features.VectoredWrites) || _features.HasFlag(Features.CopiedWrites)):
            {
                var other = Pick('f', f => f != file);
                var copied = _features.HasFlag(Features.CopiedWrites) && other.Length > 0 && (!_features.HasFlag(Features.VectoredWrites) || _r.Next(2) == 0);
                Op change = copied
                    ? new Op(_r.Next(2) == 0 ? "copyrange" : "sendfile", [other, file],
                        _r.Next(3) == 0 ? [S(Offset(2000)), S(Len()), S(_r.Next(0, 5000))] : [S(Offset(2000)), S(Len())])
                    : _r.Next(3) switch
                    {
                        0 => new Op("writev", [file], ["-1", S(Len()), S(_r.Next(1000))]),
                        1 => new Op("writev", [file], [S(Offset(2000)), S(Len()), S(_r.Next(1000))]),
                        _ => new Op("falloc", [file], [S(_r.Next(0, 70000)), S(4096L * _r.Next(1, 8))]),
                    };
                if (!copied && !_features.HasFlag(Features.VectoredWrites))
                {
                    return NewFile(dir);
                }

                return _r.Next(2) == 0 ? [change] : [change, new Op("write", [file], [S(Offset(100)), S(_r.Next(1, 200)), S(_r.Next(1000))])];
            }

            case 24 when _features.HasFlag(Features.TreeMoves):
            {
                // Out of the watched tree: a file, a symlink or a whole directory.
                var x = _tree.Keys.Where(k => k.Length > 0).Order(StringComparer.Ordinal).ToList() is { Count: > 0 } all ? all[_r.Next(all.Count)] : "";
                if (x.Length == 0)
                {
                    return NewFile(dir);
                }

                Remove(x);
                return [new Op("rename", [x, Op.Outside + Op.HistoryMark + "-o" + S(_fresh++)], [])];
            }

            case 25 when _features.HasFlag(Features.TreeMoves):
            {
                // Made outside the watched tree by the recorded command, then moved in: a file, or a tree of two levels.
                var outside = Op.Outside + Op.HistoryMark + "-i" + S(_fresh++);
                var to = NewName(dir);
                _movedIn = true;
                if (_r.Next(3) == 0)
                {
                    _tree[to] = 'f';
                    return [new Op("write", [outside], ["0", S(Len()), S(_r.Next(1000))]), new Op("rename", [outside, to], [])];
                }

                _tree[to] = 'd';
                _tree[to + "/f"] = 'f';
                _tree[to + "/sub"] = 'd';
                _tree[to + "/sub/g"] = 'f';
                _tree[to + "/sub/l"] = 'l';
                return
                [
                    new Op("mkdirp", [outside + "/sub"], []),
                    new Op("write", [outside + "/f"], [S(Offset(0) * _r.Next(2)), S(Len()), S(_r.Next(1000))]),
                    new Op("write", [outside + "/sub/g"], ["0", S(Len()), S(_r.Next(1000))]),
                    new Op("symlink", [outside + "/sub/l"], [], "../f"),
                    new Op("rename", [outside, to], []),
                ];
            }

            default:
                return file.Length == 0 ? NewFile(dir) : [new Op("append", [file], [S(Len()), S(_r.Next(1000))])];
        }
    }
}
