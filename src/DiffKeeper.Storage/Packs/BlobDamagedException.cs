namespace DiffKeeper.Storage.Packs;

/// <summary>A blob's record failed a check. Carries everything an operator needs to find it.</summary>
public sealed class BlobDamagedException : Exception
{
    public BlobDamagedException(BlobLocation location, string packPath, string reason)
        : base($"blob {location.Id.Short} in {packPath} at offset {location.Offset} is damaged: {reason}")
    {
        Location = location;
        PackPath = packPath;
        Reason = reason;
    }

    public BlobLocation Location { get; }

    public string PackPath { get; }

    public string Reason { get; }
}
