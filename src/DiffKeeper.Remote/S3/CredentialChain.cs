using DiffKeeper.Core;
using DiffKeeper.Storage;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// Finds AWS credentials the way the AWS SDKs' default chains do, in the order the Java SDK v2 and PHP SDK document
/// for theirs (botocore's differs only in providers this client does not have), and keeps them fresh:
/// <list type="number">
/// <item>the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN;</item>
/// <item>web identity from the environment (EKS IRSA): AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN
/// (AWS_ROLE_SESSION_NAME), exchanged at STS (<see cref="WebIdentityCredentials"/>);</item>
/// <item>the profile (AWS_PROFILE, default "default"), in the shared credentials file, then the config file: role_arn
/// with source_profile (a chain of profiles, each found as botocore finds a source profile's credentials) or
/// credential_source (Environment, Ec2InstanceMetadata, EcsContainer), assumed at STS AssumeRole signed with the
/// source's credentials; else static keys, else role_arn with web_identity_token_file, else credential_process
/// (<see cref="ProcessCredentials"/>). A profile whose role chain takes the environment as its source is asked before
/// the environment itself;</item>
/// <item>the container endpoint (ECS task roles, EKS Pod Identity): AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
/// AWS_CONTAINER_CREDENTIALS_FULL_URI (<see cref="ContainerCredentials"/>);</item>
/// <item>the EC2 instance metadata service, IMDSv2 (<see cref="InstanceMetadataCredentials"/>), unless
/// AWS_EC2_METADATA_DISABLED=true.</item>
/// </list>
/// The first provider that is configured answers; a configured provider that fails is one line naming it (exit 10),
/// never a silent fall-through to the next. Nothing is read before the first request needs credentials.
/// Temporary credentials are fetched again before they expire: 5 minutes ahead, or halfway through a shorter
/// lifetime; when that fetch fails while the old ones are still valid for 30 s, they are used on (with a warning)
/// and the fetch is tried again 30 s later. Thread-safe: one fetch at a time, every request waiting for it.
/// </summary>
public sealed class CredentialChain : IDisposable
{
    private static readonly TimeSpan RefreshAhead = TimeSpan.FromMinutes(5);
    private static readonly TimeSpan RetryAfterFailure = TimeSpan.FromSeconds(30);
    private readonly Func<string, string?> _env;
    private readonly AwsSettings _settings;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private InstanceMetadataCredentials? _imds;
    private AwsCredentials? _current;
    private DateTimeOffset _refreshAt;

    public CredentialChain(AwsSettings settings, Func<string, string?> env)
    {
        _settings = settings;
        _env = env;
    }

    /// <summary>Valid credentials, fetched when none are held or they are due for a refresh.</summary>
    public async ValueTask<AwsCredentials> GetAsync(CancellationToken cancel)
    {
        if (_current is { } held && DateTimeOffset.UtcNow < _refreshAt)
        {
            return held;
        }

        await _gate.WaitAsync(cancel).ConfigureAwait(false);
        try
        {
            var now = DateTimeOffset.UtcNow;
            if (_current is { } again && now < _refreshAt)
            {
                return again;
            }

            AwsCredentials fresh;
            try
            {
                fresh = await ResolveAsync(cancel).ConfigureAwait(false);
            }
            catch (DiffKeeperException e) when (_current is { Expiration: { } valid } old && valid - now > RetryAfterFailure)
            {
                TraceReader.Warning?.Invoke($"{e.Message}; the credentials held are valid until {valid:yyyy-MM-ddTHH:mm:ssZ} and used on");
                _refreshAt = now + RetryAfterFailure;
                return old;
            }

            _current = fresh;
            _refreshAt = fresh.Expiration is { } expiry
                ? now + TimeSpan.FromTicks(Math.Max(Math.Max((expiry - now - RefreshAhead).Ticks, (expiry - now).Ticks / 2), TimeSpan.TicksPerSecond))
                : DateTimeOffset.MaxValue;
            return fresh;
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>Marks <paramref name="credentials"/> as expired (S3 said ExpiredToken): the next request fetches new ones.</summary>
    public void Expire(AwsCredentials credentials)
    {
        if (ReferenceEquals(_current, credentials) && credentials.Expiration is not null)
        {
            _refreshAt = DateTimeOffset.MinValue;
        }
    }

    private string? Env(string name) => _env(name) is { Length: > 0 } v ? v : null;

    private async Task<AwsCredentials> ResolveAsync(CancellationToken cancel)
    {
        var profile = new ProfileKeys(_settings.Profile, _settings.ProfileSections(_settings.Profile));

        // A profile whose role takes the environment's keys as its source says to use the role, not the bare keys:
        // asked ahead of the environment, as the Ruby SDK does since aws-sdk-ruby#3301 (botocore reaches this
        // configuration only through an explicit --profile, which diffkeeper has no flag for).
        if (TakesEnvironmentAsSource(profile))
        {
            return await AssumeRoleAsync(profile, [profile.Name], cancel).ConfigureAwait(false);
        }

        if (Env("AWS_ACCESS_KEY_ID") is { } id && Env("AWS_SECRET_ACCESS_KEY") is { } secret)
        {
            return new AwsCredentials(id, secret, Env("AWS_SESSION_TOKEN"), null, "the environment (AWS_ACCESS_KEY_ID)");
        }

        var tokenFile = Env("AWS_WEB_IDENTITY_TOKEN_FILE");
        var roleArn = Env("AWS_ROLE_ARN");
        if (tokenFile is not null || roleArn is not null)
        {
            const string provider = "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)";
            return tokenFile is null || roleArn is null
                ? throw AwsCredentials.Failed(provider, $"{(tokenFile is null ? "AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not" : "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not")}: set both, or neither")
                : await new WebIdentityCredentials(provider, Sts.Endpoint(Env, _settings.Region, provider), roleArn, tokenFile, Env("AWS_ROLE_SESSION_NAME"))
                    .AssumeAsync(cancel).ConfigureAwait(false);
        }

        // In the profile, role_arn (with source_profile or credential_source) comes before static keys, as in botocore
        // and the Java SDK.
        var fromProfile = profile.AssumesRole
            ? await AssumeRoleAsync(profile, [profile.Name], cancel).ConfigureAwait(false)
            : await OwnCredentialsAsync(profile, cancel).ConfigureAwait(false);
        if (fromProfile is not null)
        {
            return fromProfile;
        }

        if (ContainerCredentials.FromEnvironment(Env) is { } container)
        {
            return await container.FetchAsync(cancel).ConfigureAwait(false);
        }

        string imdsAnswer;
        if (string.Equals(Env("AWS_EC2_METADATA_DISABLED"), "true", StringComparison.OrdinalIgnoreCase))
        {
            imdsAnswer = "the EC2 instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)";
        }
        else
        {
            var (credentials, absent) = await InstanceMetadataAsync(cancel).ConfigureAwait(false);
            if (credentials is not null)
            {
                return credentials;
            }

            imdsAnswer = absent!;
        }

        throw new DiffKeeperException(ExitCode.SystemError,
            $"no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or give profile '{_settings.Profile}' " +
            $"aws_access_key_id and aws_secret_access_key (or credential_process, or role_arn with source_profile) in {_settings.CredentialsFile ?? "~/.aws/credentials"}; {imdsAnswer}");
    }

    private Task<(AwsCredentials? Credentials, string? Absent)> InstanceMetadataAsync(CancellationToken cancel)
    {
        _imds ??= InstanceMetadataCredentials.FromEnvironment(Env);
        return _imds.FetchAsync(cancel);
    }

    /// <summary>
    /// A profile's credentials other than an assumed role: in the credentials file's section, then the config file's,
    /// static keys, else role_arn with web_identity_token_file, else credential_process; null when it has none.
    /// </summary>
    private async Task<AwsCredentials?> OwnCredentialsAsync(ProfileKeys profile, CancellationToken cancel)
    {
        foreach (var (file, section) in profile.Sections)
        {
            var where = $"profile '{profile.Name}' of {file}";
            if (ProfileKeys.StaticKeys(section) is var (fileId, fileSecret))
            {
                return new AwsCredentials(fileId, fileSecret, section.GetValueOrDefault("aws_session_token"), null, where);
            }

            if (section.TryGetValue("web_identity_token_file", out var profileToken) && section.TryGetValue("role_arn", out var profileRole))
            {
                var provider = $"web identity ({where})";
                return await new WebIdentityCredentials(provider, Sts.Endpoint(Env, _settings.Region, provider), profileRole, profileToken,
                    section.GetValueOrDefault("role_session_name") ?? Env("AWS_ROLE_SESSION_NAME")).AssumeAsync(cancel).ConfigureAwait(false);
            }

            if (section.TryGetValue("credential_process", out var command))
            {
                return await ProcessCredentials.RunAsync(command, $"credential_process ({where})", cancel).ConfigureAwait(false);
            }
        }

        return null;
    }

    /// <summary>
    /// The role of <paramref name="profile"/> (role_arn), assumed at STS with the credentials of its source_profile
    /// (found as botocore does: that profile's own credentials when it has static keys or no role of its own, else its
    /// role, assumed in turn) or of its credential_source. <paramref name="visited"/> holds the profiles of the chain so
    /// far: a profile met again is a loop, except a profile naming itself as the source of its own static keys.
    /// </summary>
    private async Task<AwsCredentials> AssumeRoleAsync(ProfileKeys profile, List<string> visited, CancellationToken cancel)
    {
        var roleArn = profile.Get("role_arn")!;
        var provider = $"assume role (profile '{profile.Name}' of {profile.FileOf("role_arn")})";
        var sourceProfile = profile.Get("source_profile");
        var credentialSource = profile.Get("credential_source");
        if (profile.Get("mfa_serial") is not null)
        {
            throw AwsCredentials.Failed(provider, "mfa_serial needs a code typed in at every refresh, which an unattended diffkeeper cannot do: use a profile without it, or credential_process");
        }

        AwsCredentials source;
        if (sourceProfile is not null && credentialSource is not null)
        {
            throw AwsCredentials.Failed(provider, "it sets both source_profile and credential_source: keep one");
        }
        else if (sourceProfile is not null)
        {
            var next = new ProfileKeys(sourceProfile, _settings.ProfileSections(sourceProfile));
            var selfWithKeys = sourceProfile == profile.Name && next.HasStaticKeys;
            if (visited.Contains(sourceProfile) && !selfWithKeys)
            {
                throw AwsCredentials.Failed(provider, $"the source_profile chain loops: {string.Join(" -> ", visited)} -> {sourceProfile}");
            }

            visited.Add(sourceProfile);
            source = next.HasStaticKeys || !next.AssumesRole
                ? await OwnCredentialsAsync(next, cancel).ConfigureAwait(false)
                    ?? throw AwsCredentials.Failed(provider, next.Exists
                        ? $"its source_profile '{sourceProfile}' has no credentials (static keys, role_arn, web_identity_token_file or credential_process)"
                        : $"its source_profile '{sourceProfile}' is in neither {_settings.CredentialsFile ?? "~/.aws/credentials"} nor {_settings.ConfigFile ?? "~/.aws/config"}")
                : await AssumeRoleAsync(next, visited, cancel).ConfigureAwait(false);
        }
        else if (credentialSource is not null)
        {
            source = await CredentialSourceAsync(credentialSource, provider, cancel).ConfigureAwait(false);
        }
        else
        {
            throw AwsCredentials.Failed(provider, "role_arn needs source_profile, credential_source or web_identity_token_file");
        }

        List<(string, string)> parameters = [("RoleArn", roleArn), ("RoleSessionName", profile.Get("role_session_name") ?? Sts.SessionName())];
        if (profile.Get("duration_seconds") is { } duration)
        {
            if (!int.TryParse(duration, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var seconds) || seconds is < 900 or > 43200)
            {
                throw AwsCredentials.Failed(provider, $"duration_seconds '{duration}' is not a whole number of seconds from 900 to 43200");
            }

            parameters.Add(("DurationSeconds", duration));
        }

        if (profile.Get("external_id") is { } externalId)
        {
            parameters.Add(("ExternalId", externalId));
        }

        return await Sts.CallAsync(provider, Sts.Endpoint(Env, _settings.Region, provider), "AssumeRole", parameters, source, _settings.Region, cancel)
            .ConfigureAwait(false);
    }

    /// <summary>The credentials a role's credential_source names (the values botocore accepts).</summary>
    private async Task<AwsCredentials> CredentialSourceAsync(string credentialSource, string provider, CancellationToken cancel)
    {
        switch (credentialSource)
        {
            case "Environment":
                return Env("AWS_ACCESS_KEY_ID") is { } id && Env("AWS_SECRET_ACCESS_KEY") is { } secret
                    ? new AwsCredentials(id, secret, Env("AWS_SESSION_TOKEN"), null, "the environment (AWS_ACCESS_KEY_ID)")
                    : throw AwsCredentials.Failed(provider, "credential_source is Environment but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not both set");
            case "Ec2InstanceMetadata":
                var (credentials, absent) = await InstanceMetadataAsync(cancel).ConfigureAwait(false);
                return credentials ?? throw AwsCredentials.Failed(provider, $"credential_source is Ec2InstanceMetadata, but {absent}");
            case "EcsContainer":
                return ContainerCredentials.FromEnvironment(Env) is { } container
                    ? await container.FetchAsync(cancel).ConfigureAwait(false)
                    : throw AwsCredentials.Failed(provider, "credential_source is EcsContainer but neither AWS_CONTAINER_CREDENTIALS_RELATIVE_URI nor AWS_CONTAINER_CREDENTIALS_FULL_URI is set");
            default:
                throw AwsCredentials.Failed(provider, $"credential_source '{credentialSource}' is none of Environment, Ec2InstanceMetadata, EcsContainer");
        }
    }

    /// <summary>Whether <paramref name="profile"/>'s role, or the role of a source_profile down its chain, takes its credentials from the environment.</summary>
    private bool TakesEnvironmentAsSource(ProfileKeys profile)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var p = profile; p.AssumesRole && seen.Add(p.Name);)
        {
            if (p.Get("credential_source") == "Environment")
            {
                return true;
            }

            if (p.Get("source_profile") is not { } next || (!ReferenceEquals(p, profile) && p.HasStaticKeys))
            {
                return false;
            }

            p = new ProfileKeys(next, _settings.ProfileSections(next));
        }

        return false;
    }

    /// <summary>One profile's keys in both files, the credentials file's ahead where both give one.</summary>
    private sealed record ProfileKeys(string Name, IReadOnlyList<(string? File, IReadOnlyDictionary<string, string> Keys)> Sections)
    {
        public bool Exists => Sections.Any(s => s.Keys.Count > 0);

        public bool HasStaticKeys => Sections.Any(s => StaticKeys(s.Keys) is not null);

        /// <summary>role_arn that is assumed with a source's credentials (role_arn with web_identity_token_file is web identity).</summary>
        public bool AssumesRole => Get("role_arn") is not null && Get("web_identity_token_file") is null;

        public string? Get(string key) => Sections.Select(s => s.Keys.GetValueOrDefault(key)).FirstOrDefault(v => v is not null);

        public string? FileOf(string key) => Sections.FirstOrDefault(s => s.Keys.ContainsKey(key)).File;

        public static (string Id, string Secret)? StaticKeys(IReadOnlyDictionary<string, string> section) =>
            section.TryGetValue("aws_access_key_id", out var id) && section.TryGetValue("aws_secret_access_key", out var secret) ? (id, secret) : null;
    }

    public void Dispose()
    {
        _imds?.Dispose();
        _gate.Dispose();
    }
}
