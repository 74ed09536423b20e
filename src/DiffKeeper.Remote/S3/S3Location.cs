using DiffKeeper.Core;

namespace DiffKeeper.Remote.S3;

/// <summary>An <c>s3://bucket/prefix</c> address: the bucket and the key prefix (no leading or trailing slash).</summary>
public sealed record S3Location(string Bucket, string Prefix)
{
    public const string Scheme = "s3://";

    public static bool IsRemote(string? value) => value is not null && value.StartsWith(Scheme, StringComparison.Ordinal);

    public static S3Location Parse(string value)
    {
        if (!IsRemote(value))
        {
            throw new DiffKeeperException(ExitCode.Usage, $"'{value}' is not an s3://bucket/prefix address");
        }

        var rest = value[Scheme.Length..];
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        var bucket = slash < 0 ? rest : rest[..slash];
        var prefix = slash < 0 ? "" : rest[(slash + 1)..].Trim('/');
        if (bucket.Length is < 3 or > 63 || !bucket.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '.'))
        {
            throw new DiffKeeperException(ExitCode.Usage,
                $"'{value}' names no valid bucket (3 to 63 of a-z, 0-9, '-', '.'); write s3://bucket/prefix");
        }

        if (prefix.Contains("//", StringComparison.Ordinal) || prefix.Split('/').Any(p => p is "." or ".."))
        {
            throw new DiffKeeperException(ExitCode.Usage, $"'{value}' has an empty, '.' or '..' component in its prefix");
        }

        return new S3Location(bucket, prefix);
    }

    /// <summary>The object key of <paramref name="relative"/> under the prefix.</summary>
    public string Key(string relative) => Prefix.Length == 0 ? relative : Prefix + "/" + relative;

    public override string ToString() => Prefix.Length == 0 ? $"{Scheme}{Bucket}" : $"{Scheme}{Bucket}/{Prefix}";
}
