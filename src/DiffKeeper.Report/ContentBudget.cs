using System.Text.Json;
using DiffKeeper.Core;
using DiffKeeper.Replay;
using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Report;

/// <summary>
/// The file contents a report carries, keyed by content id (hex), each read once and checked as export checks it.
/// Text is kept whole; a binary version (a NUL in its first 8000 bytes, git's rule) keeps its first 4 KiB for a hex
/// view. A version above <see cref="ReportLimits.MaxFileBytes"/>, past <see cref="ReportLimits.MaxContentBytes"/> in
/// total, pruned or damaged is listed with the reason instead of its bytes.
/// </summary>
internal sealed class ContentBudget(TraceReader reader, SessionInfo session, ReportLimits limits)
{
    private const int BinaryHeadBytes = 4096;

    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private long _spent;

    public int Stored => _entries.Values.Count(e => e.Omitted is null);

    public int Omitted => _entries.Values.Count(e => e.Omitted is not null);

    public static string? KeyOf(VersionRecord v) => v.Kind != EntryKind.File || v.Pruned || v.ContentId is null
        ? null
        : Convert.ToHexStringLower(v.ContentId);

    /// <summary>The key of <paramref name="v"/>'s content, reading it the first time; null when it was pruned.</summary>
    public string? Add(VersionRecord v)
    {
        if (KeyOf(v) is not { } key)
        {
            return null;
        }

        if (_entries.ContainsKey(key))
        {
            return key;
        }

        Entry entry;
        if (v.Size > limits.MaxFileBytes)
        {
            entry = Entry.Without(v.Size, $"{v.Size} bytes, above the report's {limits.MaxFileBytes >> 10} KiB per version; 'diffkeeper show' prints it");
        }
        else if (_spent + v.Size > limits.MaxContentBytes)
        {
            entry = Entry.Without(v.Size, $"the report's {limits.MaxContentBytes >> 20} MiB of contents are used up; 'diffkeeper show' prints it");
        }
        else
        {
            try
            {
                var bytes = VersionContent.ReadAll(reader, session, v);
                var binary = bytes.AsSpan(0, Math.Min(bytes.Length, 8000)).Contains((byte)0);
                entry = binary ? new Entry(v.Size, null, bytes[..Math.Min(bytes.Length, BinaryHeadBytes)], null) : new Entry(v.Size, bytes, null, null);
                _spent += binary ? Math.Min(bytes.Length, BinaryHeadBytes) : bytes.Length;
            }
            catch (DiffKeeperException e)
            {
                entry = Entry.Without(v.Size, e.Message);
            }
        }

        _entries[key] = entry;
        return key;
    }

    public bool IsBinary(string? key) => key is not null && _entries.TryGetValue(key, out var e) && e.BinaryHead is not null;

    public void WriteAll(Utf8JsonWriter j)
    {
        j.WriteStartObject("contents");
        foreach (var (key, e) in _entries)
        {
            j.WriteStartObject(key);
            j.WriteNumber("size", e.Size);
            if (e.Text is not null)
            {
                j.WriteString("text", System.Text.Encoding.UTF8.GetString(e.Text));
                if (!System.Text.Unicode.Utf8.IsValid(e.Text))
                {
                    j.WriteBoolean("lossy", true);
                }
            }
            else if (e.BinaryHead is not null)
            {
                j.WriteBoolean("binary", true);
                j.WriteBase64String("head", e.BinaryHead);
            }
            else
            {
                j.WriteString("omitted", e.Omitted);
            }

            j.WriteEndObject();
        }

        j.WriteEndObject();
    }

    private sealed record Entry(long Size, byte[]? Text, byte[]? BinaryHead, string? Omitted)
    {
        public static Entry Without(long size, string reason) => new(size, null, null, reason);
    }
}
