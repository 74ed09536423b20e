namespace DiffKeeper.Core;

/// <summary>What a path is in one version. Stored as its number in the catalog: never renumber.</summary>
public enum EntryKind
{
    Absent = 0,
    File = 1,
    Directory = 2,
    Symlink = 3,
}
