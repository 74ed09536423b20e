using System.Globalization;
using System.Net;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// An EC2 instance role's credentials from the instance metadata service, IMDSv2 only (the session-token protocol,
/// as the EC2 user guide specifies it): <c>PUT /latest/api/token</c> with <c>X-aws-ec2-metadata-token-ttl-seconds</c>
/// gives a token (kept for its 6 h, fetched again when it expires or is refused with 401); with it in
/// <c>X-aws-ec2-metadata-token</c>, <c>GET /latest/meta-data/iam/security-credentials/</c> names the role and
/// <c>GET …/ROLE</c> gives the credentials as JSON. The service is at http://169.254.169.254 (with
/// AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6 at http://[fd00:ec2::254]), or at AWS_EC2_METADATA_SERVICE_ENDPOINT;
/// each request is given AWS_METADATA_SERVICE_TIMEOUT seconds (default 1) and AWS_METADATA_SERVICE_NUM_ATTEMPTS
/// tries (default 1), as the SDKs do. At the default address, no answer or a refused token means "not on EC2"
/// (the chain then has no credentials); an endpoint named by the variable that fails is a failure naming it.
/// </summary>
internal sealed class InstanceMetadataCredentials : IDisposable
{
    private const string CredentialsPath = "/latest/meta-data/iam/security-credentials/";
    private const int TokenSeconds = 21600;
    private readonly HttpClient _http = CredentialHttp.Create(useProxy: false);
    private readonly Uri _endpoint;
    private readonly bool _configured;
    private readonly TimeSpan _timeout;
    private readonly int _attempts;
    private string? _token;
    private DateTimeOffset _tokenExpires;

    private InstanceMetadataCredentials(Uri endpoint, bool configured, TimeSpan timeout, int attempts)
    {
        _endpoint = endpoint;
        _configured = configured;
        _timeout = timeout;
        _attempts = attempts;
        Provider = $"the EC2 instance metadata service (IMDSv2 at {endpoint.GetLeftPart(UriPartial.Authority)})";
    }

    public string Provider { get; }

    public static InstanceMetadataCredentials FromEnvironment(Func<string, string?> env)
    {
        var configured = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
        var address = configured
            ?? (string.Equals(env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"), "IPv6", StringComparison.OrdinalIgnoreCase) ? "http://[fd00:ec2::254]" : "http://169.254.169.254");
        if (!Uri.TryCreate(address, UriKind.Absolute, out var endpoint) || endpoint.Scheme is not ("http" or "https"))
        {
            throw AwsCredentials.Failed("the EC2 instance metadata service", $"AWS_EC2_METADATA_SERVICE_ENDPOINT '{address}' is not an http:// or https:// address");
        }

        var timeout = double.TryParse(env("AWS_METADATA_SERVICE_TIMEOUT"), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 1;
        var attempts = int.TryParse(env("AWS_METADATA_SERVICE_NUM_ATTEMPTS"), NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : 1;
        return new InstanceMetadataCredentials(endpoint, configured is not null, TimeSpan.FromSeconds(timeout), attempts);
    }

    /// <summary>The role's credentials; or null and why, when no metadata service is there (the default address only).</summary>
    public async Task<(AwsCredentials? Credentials, string? Absent)> FetchAsync(CancellationToken cancel)
    {
        for (var refused = 0; ; refused++)
        {
            if (_token is null || DateTimeOffset.UtcNow >= _tokenExpires)
            {
                var (status, body, failure) = await TryAsync(HttpMethod.Put, "/latest/api/token", cancel).ConfigureAwait(false);
                if (failure is not null || status != HttpStatusCode.OK || body.Length == 0)
                {
                    var why = failure ?? $"PUT /latest/api/token answered {(int)status} (diffkeeper reads IMDSv2 only)";
                    return _configured
                        ? throw AwsCredentials.Failed(Provider, why)
                        : (null, $"no EC2 instance metadata service at {_endpoint.GetLeftPart(UriPartial.Authority)} ({why})");
                }

                _token = body.Trim();
                _tokenExpires = DateTimeOffset.UtcNow + TimeSpan.FromSeconds(TokenSeconds - 60);
            }

            var (roleStatus, roles, roleFailure) = await TryAsync(HttpMethod.Get, CredentialsPath, cancel).ConfigureAwait(false);
            if (roleStatus == HttpStatusCode.Unauthorized && refused == 0)
            {
                _token = null; // the token expired early (or the service restarted): one new token
                continue;
            }

            var role = roles.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
            if (roleFailure is not null || roleStatus != HttpStatusCode.OK || role is null)
            {
                throw AwsCredentials.Failed(Provider, roleFailure is not null ? $"GET {CredentialsPath}: {roleFailure}"
                    : roleStatus == HttpStatusCode.NotFound || role is null ? "the instance has no IAM role (attach an instance profile)"
                    : $"GET {CredentialsPath} answered {(int)roleStatus}");
            }

            var path = CredentialsPath + Uri.EscapeDataString(role);
            var (status2, json, failure2) = await TryAsync(HttpMethod.Get, path, cancel).ConfigureAwait(false);
            if (status2 == HttpStatusCode.Unauthorized && refused == 0)
            {
                _token = null;
                continue;
            }

            return failure2 is not null || status2 != HttpStatusCode.OK
                ? throw AwsCredentials.Failed(Provider, $"GET {path}: {failure2 ?? $"answered {(int)status2}"}")
                : (AwsCredentials.FromJson(json, Provider), null);
        }
    }

    private async Task<(HttpStatusCode Status, string Body, string? Failure)> TryAsync(HttpMethod method, string path, CancellationToken cancel)
    {
        try
        {
            var (status, body) = await CredentialHttp.SendAsync(_http, () =>
            {
                var request = new HttpRequestMessage(method, new Uri(_endpoint, path));
                if (method == HttpMethod.Put)
                {
                    request.Headers.TryAddWithoutValidation("X-aws-ec2-metadata-token-ttl-seconds", TokenSeconds.ToString(CultureInfo.InvariantCulture));
                }
                else
                {
                    request.Headers.TryAddWithoutValidation("X-aws-ec2-metadata-token", _token);
                }

                return request;
            }, _timeout, _attempts, cancel).ConfigureAwait(false);
            return (status, body, null);
        }
        catch (HttpRequestException e)
        {
            return (0, "", e.Message);
        }
    }

    public void Dispose() => _http.Dispose();
}
