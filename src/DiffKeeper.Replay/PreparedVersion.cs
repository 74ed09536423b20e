using DiffKeeper.Storage;
using DiffKeeper.Storage.Catalog;
using DiffKeeper.Storage.Packs;

namespace DiffKeeper.Replay;

/// <summary>
/// A file version <see cref="VersionContent.Prepare"/> checked: its extents, and their blob locations (null for a
/// map of more extents than a reader keeps, which is looked up again while decoding).
/// </summary>
public sealed class PreparedVersion
{
    internal PreparedVersion(string display, VersionRecord version, List<Extent> extents, BlobLocation[]? locations)
    {
        Display = display;
        Version = version;
        Extents = extents;
        Locations = locations;
    }

    /// <summary>How the path is shown in errors.</summary>
    public string Display { get; }

    public VersionRecord Version { get; }

    internal List<Extent> Extents { get; }

    internal BlobLocation[]? Locations { get; }

    /// <summary>The group the first extent's bytes start from (<see cref="BlobReader.GroupOf"/>); null when none.</summary>
    public long? FirstGroup(BlobReader blobs) => Locations is { Length: > 0 } l ? blobs.GroupOf(l[0]) : null;
}
