using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using DiffKeeper.Cli.Rendering;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Commands;

internal static class LsCommand
{
    public static Command Create(IConsole console)
    {
        var trace = CommonOptions.Trace();
        var session = CommonOptions.Session();
        var time = CommonOptions.Time("--time", "The moment (default: end): " + CommonOptions.TimeHelp);
        var json = new Option<bool>("--json") { Description = "One JSON object per line: path, kind, mode, size, mtime_ns, mtime, target" };
        var path = new Argument<string?>("path")
        {
            Description = "Only this path and what is below it (relative to the watched directory, or absolute)",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var cmd = new Command("ls", """
            List the watched tree as it was at a moment, without exporting it: every entry with its kind and mode,
            size, modification time (ns) and symlink target, sorted by path (byte order), as export would write it.
            Example: diffkeeper ls --time '#42' build/
            """)
        {
            trace, session, time, json, path,
        };
        cmd.SetAction(pr =>
        {
            var at = pr.GetValue(time) ?? TimeSpec.End;
            using var reader = TraceReader.Open(pr.GetValue(trace)!);
            var s = reader.Session(pr.GetValue(session));
            var seq = reader.Resolve(s, at);
            var entries = Materializer.Plan(reader, s, seq);
            if (pr.GetValue(path) is { Length: > 0 } wanted)
            {
                // The path as given, else as the escaped display form text output shows (PathBytes.Display).
                var all = entries;
                List<(string Path, VersionRecord Version)> Below(string prefix) =>
                    all.Where(e => prefix.Length == 0 || e.Path == prefix || e.Path.StartsWith(prefix + "/", StringComparison.Ordinal)).ToList();
                entries = Below(Relative(s, wanted));
                if (entries.Count == 0 && PathBytes.ParseDisplay(wanted) is { } parsed)
                {
                    entries = Below(Relative(s, parsed));
                }

                if (entries.Count == 0)
                {
                    throw new DiffKeeperException(ExitCode.NotFound, $"{wanted} did not exist at {at} (after event #{seq}) in session {s.Id}; 'diffkeeper log {wanted}' shows when it did");
                }
            }

            if (pr.GetValue(json))
            {
                using var stdout = new BufferedStream(console.OpenStandardOutput(), 1 << 16);
                using var writer = new Utf8JsonWriter(stdout);
                foreach (var (p, v) in entries)
                {
                    Json(writer, p, v);
                    writer.Flush();
                    writer.Reset();
                    stdout.WriteByte((byte)'\n');
                }

                stdout.Flush();
                return 0;
            }

            var w = console.Out;
            foreach (var (p, v) in entries)
            {
                w.WriteLine(Line(p, v));
            }

            w.Flush();
            return 0;
        });
        return cmd;
    }

    /// <summary>An ls -l style line: "-rw-r--r--        12  2026-11-22T03:30:00.123456789Z  dir/a.txt".</summary>
    public static string Line(string path, VersionRecord v)
    {
        var size = v.Kind == EntryKind.File ? v.Size.ToString(CultureInfo.InvariantCulture) : "-";
        var target = v.Kind == EntryKind.Symlink ? " -> " + PathBytes.Display(v.Target ?? "") : "";
        return $"{ModeString(v)} {size,12}  {Mtime(v.MtimeNs)}  {PathBytes.Display(path)}{target}";
    }

    private static void Json(Utf8JsonWriter j, string path, VersionRecord v)
    {
        j.WriteStartObject();
        JsonPath.Write(j, "path", path);
        j.WriteString("kind", DiffRenderer.Kind(v.Kind));
        j.WriteString("mode", DiffRenderer.Mode(v.Mode));
        if (v.Kind == EntryKind.File)
        {
            j.WriteNumber("size", v.Size);
        }
        else
        {
            j.WriteNull("size");
        }

        j.WriteNumber("mtime_ns", v.MtimeNs);
        j.WriteString("mtime", Mtime(v.MtimeNs));
        if (v.Kind == EntryKind.Symlink)
        {
            JsonPath.Write(j, "target", v.Target);
        }
        else
        {
            j.WriteNull("target");
        }

        j.WriteEndObject();
    }

    /// <summary>The path as export names it: root-relative with one root, the root's path without its '/' with several.</summary>
    private static string Relative(SessionInfo s, string path)
    {
        if (path.StartsWith('/') && s.Roots.Count == 1)
        {
            var root = s.Roots[0].Path.TrimEnd('/');
            path = path == root ? "" : path.StartsWith(root + "/", StringComparison.Ordinal) ? path[(root.Length + 1)..] : path;
        }

        return path.Trim('/');
    }

    private static string Mtime(long ns) =>
        DateTimeOffset.UnixEpoch.AddSeconds(Math.Floor(ns / 1e9)).ToString("yyyy-MM-ddTHH:mm:ss", CultureInfo.InvariantCulture) +
        "." + (((ns % 1_000_000_000) + 1_000_000_000) % 1_000_000_000).ToString("D9", CultureInfo.InvariantCulture) + "Z";

    private static string ModeString(VersionRecord v)
    {
        var chars = new char[10];
        chars[0] = v.Kind switch { EntryKind.Directory => 'd', EntryKind.Symlink => 'l', _ => '-' };
        var mode = v.Kind == EntryKind.Symlink ? 0x1FF : v.Mode;
        const string rwx = "rwxrwxrwx";
        for (var i = 0; i < 9; i++)
        {
            chars[i + 1] = (mode & (1 << (8 - i))) != 0 ? rwx[i] : '-';
        }

        if ((mode & 0x800) != 0)
        {
            chars[3] = chars[3] == 'x' ? 's' : 'S';
        }

        if ((mode & 0x400) != 0)
        {
            chars[6] = chars[6] == 'x' ? 's' : 'S';
        }

        if ((mode & 0x200) != 0)
        {
            chars[9] = chars[9] == 'x' ? 't' : 'T';
        }

        return new string(chars);
    }
}
