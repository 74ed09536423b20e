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
/// <item>the profile (AWS_PROFILE, default "default"), in the shared credentials file, then the config file: static
/// keys, else role_arn with web_identity_token_file, else credential_process (<see cref="ProcessCredentials"/>);</item>
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
                : await WebIdentity(provider, roleArn, tokenFile).AssumeAsync(cancel).ConfigureAwait(false);
        }

        foreach (var (file, section) in new[] { (_settings.CredentialsFile, _settings.FromCredentials), (_settings.ConfigFile, _settings.FromConfig) })
        {
            var where = $"profile '{_settings.Profile}' of {file}";
            if (section.TryGetValue("aws_access_key_id", out var fileId) && section.TryGetValue("aws_secret_access_key", out var fileSecret))
            {
                return new AwsCredentials(fileId, fileSecret, section.GetValueOrDefault("aws_session_token"), null, where);
            }

            if (section.TryGetValue("web_identity_token_file", out var profileToken) && section.TryGetValue("role_arn", out var profileRole))
            {
                return await WebIdentity($"web identity ({where})", profileRole, profileToken, section.GetValueOrDefault("role_session_name"))
                    .AssumeAsync(cancel).ConfigureAwait(false);
            }

            if (section.TryGetValue("credential_process", out var command))
            {
                return await ProcessCredentials.RunAsync(command, $"credential_process ({where})", cancel).ConfigureAwait(false);
            }
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
            _imds ??= InstanceMetadataCredentials.FromEnvironment(Env);
            var (credentials, absent) = await _imds.FetchAsync(cancel).ConfigureAwait(false);
            if (credentials is not null)
            {
                return credentials;
            }

            imdsAnswer = absent!;
        }

        throw new DiffKeeperException(ExitCode.SystemError,
            $"no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or give profile '{_settings.Profile}' " +
            $"aws_access_key_id and aws_secret_access_key (or credential_process) in {_settings.CredentialsFile ?? "~/.aws/credentials"}; {imdsAnswer}");
    }

    private WebIdentityCredentials WebIdentity(string provider, string roleArn, string tokenFile, string? sessionName = null)
    {
        var endpoint = Env("AWS_ENDPOINT_URL_STS") ?? Env("AWS_ENDPOINT_URL") ?? $"https://sts.{_settings.Region}.amazonaws.com";
        return !Uri.TryCreate(endpoint, UriKind.Absolute, out var sts) || sts.Scheme is not ("http" or "https")
            ? throw AwsCredentials.Failed(provider, $"the STS endpoint '{endpoint}' is not an http:// or https:// address")
            : new WebIdentityCredentials(provider, sts, roleArn, tokenFile, sessionName ?? Env("AWS_ROLE_SESSION_NAME"));
    }

    public void Dispose()
    {
        _imds?.Dispose();
        _gate.Dispose();
    }
}
