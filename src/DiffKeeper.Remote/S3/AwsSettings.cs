using DiffKeeper.Core;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// What the AWS tools read from the environment and the shared files, for S3: the AWS_PROFILE profile (default
/// "default") of the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials) and of the
/// config file (AWS_CONFIG_FILE, else ~/.aws/config, section "[profile NAME]" or "[default]"); the region from
/// AWS_REGION / AWS_DEFAULT_REGION / the profile's "region" in the config file, else us-east-1; the endpoint from
/// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL. Credentials are found by <see cref="CredentialChain"/>, when the first
/// request needs them.
/// </summary>
public sealed class AwsSettings
{
    private AwsSettings(string profile, string? credentialsFile, IReadOnlyDictionary<string, string> fromCredentials,
        string? configFile, IReadOnlyDictionary<string, string> fromConfig, string region, Uri? endpoint)
    {
        Profile = profile;
        CredentialsFile = credentialsFile;
        FromCredentials = fromCredentials;
        ConfigFile = configFile;
        FromConfig = fromConfig;
        Region = region;
        Endpoint = endpoint;
    }

    public string Profile { get; }

    public string? CredentialsFile { get; }

    /// <summary>The profile's keys in the shared credentials file (empty: no such file or section).</summary>
    public IReadOnlyDictionary<string, string> FromCredentials { get; }

    public string? ConfigFile { get; }

    /// <summary>The profile's keys in the config file (empty: no such file or section).</summary>
    public IReadOnlyDictionary<string, string> FromConfig { get; }

    public string Region { get; }

    /// <summary>An S3-compatible server's address; null for AWS S3.</summary>
    public Uri? Endpoint { get; }

    public static AwsSettings Read(Func<string, string?> env)
    {
        string? Env(string name) => env(name) is { Length: > 0 } v ? v : null;

        Uri? endpoint = null;
        if ((Env("AWS_ENDPOINT_URL_S3") ?? Env("AWS_ENDPOINT_URL")) is { } e)
        {
            if (!Uri.TryCreate(e, UriKind.Absolute, out endpoint) || endpoint.Scheme is not ("http" or "https"))
            {
                throw new DiffKeeperException(ExitCode.Usage, $"the S3 endpoint '{e}' is not an http:// or https:// address");
            }
        }

        var home = Env("HOME");
        var profile = Env("AWS_PROFILE") ?? "default";
        var credentialsFile = Env("AWS_SHARED_CREDENTIALS_FILE") ?? (home is null ? null : Path.Combine(home, ".aws", "credentials"));
        var configFile = Env("AWS_CONFIG_FILE") ?? (home is null ? null : Path.Combine(home, ".aws", "config"));
        var fromCredentials = Section(credentialsFile, profile);
        var fromConfig = Section(configFile, profile == "default" ? "default" : "profile " + profile);
        var region = Env("AWS_REGION") ?? Env("AWS_DEFAULT_REGION") ?? fromConfig.GetValueOrDefault("region") ?? "us-east-1";
        return new AwsSettings(profile, credentialsFile, fromCredentials, configFile, fromConfig, region, endpoint);
    }

    /// <summary>
    /// The sections of profile <paramref name="name"/>: its keys in the shared credentials file, then in the config
    /// file ("[profile NAME]", "[default]"); each empty when the file or section is missing. The credentials file's
    /// come first: where both files give a key, botocore and the Java SDK take the credentials file's.
    /// </summary>
    public IReadOnlyList<(string? File, IReadOnlyDictionary<string, string> Keys)> ProfileSections(string name) =>
        name == Profile
            ? [(CredentialsFile, FromCredentials), (ConfigFile, FromConfig)]
            : [(CredentialsFile, Section(CredentialsFile, name)), (ConfigFile, Section(ConfigFile, name == "default" ? "default" : "profile " + name))];

    /// <summary>The keys of one [section] of an INI-style AWS file (names compared without case); empty when the file or section is missing.</summary>
    private static Dictionary<string, string> Section(string? file, string name)
    {
        var values = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string[] lines;
        try
        {
            lines = file is null ? [] : File.ReadAllLines(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return values;
        }

        var inside = false;
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] is '#' or ';')
            {
                continue;
            }

            if (line[0] == '[')
            {
                var end = line.IndexOf(']', StringComparison.Ordinal);
                inside = end > 0 && string.Equals(line[1..end].Trim(), name, StringComparison.Ordinal);
                continue;
            }

            var eq = line.IndexOf('=', StringComparison.Ordinal);
            if (inside && eq > 0)
            {
                values[line[..eq].Trim()] = line[(eq + 1)..].Trim();
            }
        }

        return values;
    }
}
