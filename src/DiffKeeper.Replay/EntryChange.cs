using DiffKeeper.Core;
using DiffKeeper.Storage.Catalog;

namespace DiffKeeper.Replay;

/// <summary>One path that differs between two states: absent on one side (added, removed) or different on both.</summary>
public sealed record EntryChange(string Path, VersionRecord? Before, VersionRecord? After)
{
    public string Change => Before is null ? "added" : After is null ? "removed" : "changed";

    public bool KindChanged => Before is not null && After is not null && Before.Kind != After.Kind;

    public bool ModeChanged => Before is not null && After is not null && !KindChanged && Before.Kind != EntryKind.Symlink &&
        (Before.Mode & 0xFFF) != (After.Mode & 0xFFF);

    public bool TargetChanged => Before is { Kind: EntryKind.Symlink } && After is { Kind: EntryKind.Symlink } &&
        !string.Equals(Before.Target, After.Target, StringComparison.Ordinal);

    /// <summary>Both sides are files whose recorded content may differ (their content ids or sizes differ).</summary>
    public bool ContentMayDiffer => Before is { Kind: EntryKind.File } && After is { Kind: EntryKind.File } &&
        (Before.Size != After.Size || Before.ContentId is null || After.ContentId is null || !Before.ContentId.AsSpan().SequenceEqual(After.ContentId));
}
