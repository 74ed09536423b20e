using System.Globalization;
using System.Text;
using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Cli.Rendering;

/// <summary>
/// Formats `diff`: per path a header line in our words, then for text files the "---"/"+++" lines and hunks exactly
/// as diff -u prints them, for binary files the changed byte ranges. File contents are written as bytes (a text
/// file need not be UTF-8), the rest as UTF-8 with control characters shown as '?'.
/// </summary>
public static class DiffRenderer
{
    public static void Text(Stream output, EntryChange change, ContentComparison content)
    {
        Write(output, Header(change, content) + "\n");
        switch (content.Difference)
        {
            case ContentDifference.Text when !content.Lines!.Same:
                var path = PathBytes.Display(change.Path);
                Write(output, (change.Before is null ? "--- /dev/null" : $"--- a/{path}") + "\n");
                Write(output, (change.After is null ? "+++ /dev/null" : $"+++ b/{path}") + "\n");
                content.Lines.WriteHunks(output);
                break;
            case ContentDifference.Binary:
                foreach (var (offset, length) in content.Ranges)
                {
                    Write(output, string.Create(CultureInfo.InvariantCulture, $"  bytes {offset}-{offset + length - 1} ({TimelineRenderer.FormatSize(length)})\n"));
                }

                if (content.RangeCount > content.Ranges.Count)
                {
                    Write(output, string.Create(CultureInfo.InvariantCulture, $"  and {content.RangeCount - content.Ranges.Count} more ranges\n"));
                }

                break;
        }
    }

    /// <summary>The first line of a path's entry: "added file x (mode 0644, 12 B)", "changed x: mode 0644 -> 0755; +3 -1 lines".</summary>
    public static string Header(EntryChange change, ContentComparison content)
    {
        var path = PathBytes.Display(change.Path);
        if (change.Before is null || change.After is null)
        {
            var v = change.Before ?? change.After!;
            return $"{change.Change} {Kind(v.Kind)} {path}{Describe(v)}";
        }

        var parts = new List<string>();
        if (change.KindChanged)
        {
            parts.Add($"{Kind(change.Before.Kind)}{Describe(change.Before)} -> {Kind(change.After.Kind)}{Describe(change.After)}");
        }

        if (change.ModeChanged)
        {
            parts.Add($"mode {Mode(change.Before.Mode)} -> {Mode(change.After.Mode)}");
        }

        if (change.TargetChanged)
        {
            parts.Add($"symlink target '{PathBytes.Display(change.Before.Target ?? "")}' -> '{PathBytes.Display(change.After.Target ?? "")}'");
        }

        if (Counts(change, content) is { } counts)
        {
            parts.Add(counts);
        }

        return $"changed {path}: {string.Join("; ", parts)}";
    }

    public static void Stat(TextWriter w, List<(EntryChange Change, ContentComparison Content)> changes)
    {
        var width = Math.Min(50, changes.Count == 0 ? 0 : changes.Max(c => PathBytes.Display(c.Change.Path).Length));
        long insertions = 0, deletions = 0;
        foreach (var (change, content) in changes)
        {
            var what = new List<string>();
            if (change.Before is null || change.After is null)
            {
                what.Add($"{change.Change} {Kind((change.Before ?? change.After)!.Kind)}");
            }
            else if (change.KindChanged)
            {
                what.Add($"{Kind(change.Before.Kind)} -> {Kind(change.After.Kind)}");
            }

            if (change.ModeChanged)
            {
                what.Add($"mode {Mode(change.Before!.Mode)} -> {Mode(change.After!.Mode)}");
            }

            if (change.TargetChanged)
            {
                what.Add("symlink target");
            }

            if (Counts(change, content) is { } counts)
            {
                what.Add(counts);
            }

            insertions += content.Lines?.Insertions ?? 0;
            deletions += content.Lines?.Deletions ?? 0;
            w.WriteLine($" {PathBytes.Display(change.Path).PadRight(width)} | {string.Join(", ", what)}");
        }

        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $" {changes.Count} {(changes.Count == 1 ? "path" : "paths")} changed, {insertions} insertions(+), {deletions} deletions(-)"));
    }

    public static void Json(Utf8JsonWriter j, EntryChange change, ContentComparison content)
    {
        j.WriteStartObject();
        JsonPath.Write(j, "path", change.Path);
        j.WriteString("change", change.Change);
        Side(j, "before", change.Before);
        Side(j, "after", change.After);
        j.WriteString("content", content.Difference switch
        {
            ContentDifference.Same => "same",
            ContentDifference.Text => "text",
            ContentDifference.Binary => "binary",
            ContentDifference.TooLarge => "too_large",
            _ => "none",
        });
        if (content.Lines is { } lines)
        {
            j.WriteNumber("insertions", lines.Insertions);
            j.WriteNumber("deletions", lines.Deletions);
        }
        else
        {
            j.WriteNull("insertions");
            j.WriteNull("deletions");
        }

        if (content.Difference == ContentDifference.Binary)
        {
            j.WriteStartArray("ranges");
            foreach (var (offset, length) in content.Ranges)
            {
                j.WriteStartObject();
                j.WriteNumber("offset", offset);
                j.WriteNumber("length", length);
                j.WriteEndObject();
            }

            j.WriteEndArray();
            j.WriteNumber("range_count", content.RangeCount);
            j.WriteNumber("range_bytes", content.RangeBytes);
        }
        else
        {
            j.WriteNull("ranges");
            j.WriteNull("range_count");
            j.WriteNull("range_bytes");
        }

        j.WriteEndObject();
    }

    private static void Side(Utf8JsonWriter j, string name, VersionRecord? v)
    {
        if (v is null)
        {
            j.WriteNull(name);
            return;
        }

        j.WriteStartObject(name);
        j.WriteString("kind", Kind(v.Kind));
        j.WriteString("mode", Mode(v.Mode));
        if (v.Kind == EntryKind.File)
        {
            j.WriteNumber("size", v.Size);
        }
        else
        {
            j.WriteNull("size");
        }

        if (v.Kind == EntryKind.Symlink)
        {
            JsonPath.Write(j, "target", v.Target);
        }
        else
        {
            j.WriteNull("target");
        }

        j.WriteNumber("seq", v.Seq);
        j.WriteEndObject();
    }

    private static string? Counts(EntryChange change, ContentComparison content) => content.Difference switch
    {
        ContentDifference.Text when !content.Lines!.Same || change.Change == "changed" => string.Create(CultureInfo.InvariantCulture,
            $"+{content.Lines.Insertions} -{content.Lines.Deletions} lines"),
        ContentDifference.Binary => string.Create(CultureInfo.InvariantCulture,
            $"binary, {content.RangeCount} {(content.RangeCount == 1 ? "range" : "ranges")} of {TimelineRenderer.FormatSize(content.RangeBytes)} differ, size {Size(change.Before)} -> {Size(change.After)}"),
        ContentDifference.TooLarge => $"contents differ, size {Size(change.Before)} -> {Size(change.After)} ({content.Reason})",
        _ => null,
    };

    private static string Size(VersionRecord? v) => v is null ? "none" : TimelineRenderer.FormatSize(v.Size);

    private static string Describe(VersionRecord v) => v.Kind switch
    {
        EntryKind.File => $" (mode {Mode(v.Mode)}, {TimelineRenderer.FormatSize(v.Size)})",
        EntryKind.Directory => $" (mode {Mode(v.Mode)})",
        EntryKind.Symlink => $" -> '{PathBytes.Display(v.Target ?? "")}'",
        _ => "",
    };

    public static string Kind(EntryKind kind) => kind switch
    {
        EntryKind.File => "file",
        EntryKind.Directory => "directory",
        EntryKind.Symlink => "symlink",
        _ => "absent",
    };

    public static string Mode(int mode) => Convert.ToString(mode & 0xFFF, 8).PadLeft(4, '0');

    private static void Write(Stream output, string text) => output.Write(Encoding.UTF8.GetBytes(text));
}
