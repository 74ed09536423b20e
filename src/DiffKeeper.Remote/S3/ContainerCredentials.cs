using System.Net;
using System.Net.Sockets;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// A task's or pod's role credentials from the container credentials endpoint (ECS task roles, EKS Pod Identity):
/// GET http://169.254.170.2 + AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, or AWS_CONTAINER_CREDENTIALS_FULL_URI (https,
/// or http to a loopback address or to the ECS and EKS agents' link-local addresses, as the SDKs allow), with the
/// Authorization header from the file AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE names, else from
/// AWS_CONTAINER_AUTHORIZATION_TOKEN; the answer is the same JSON as the instance metadata service's. 3 tries of 5 s.
/// </summary>
internal sealed class ContainerCredentials
{
    private const string Provider = "the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*_URI)";
    private readonly Uri _address;
    private readonly Func<string, string?> _env;

    private ContainerCredentials(Uri address, Func<string, string?> env)
    {
        _address = address;
        _env = env;
    }

    /// <summary>The endpoint the environment names, or null when it names none.</summary>
    public static ContainerCredentials? FromEnvironment(Func<string, string?> env)
    {
        string address;
        if (env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") is { } relative)
        {
            address = "http://169.254.170.2" + (relative.StartsWith('/') ? "" : "/") + relative;
        }
        else if (env("AWS_CONTAINER_CREDENTIALS_FULL_URI") is { } full)
        {
            address = full;
        }
        else
        {
            return null;
        }

        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw AwsCredentials.Failed(Provider, $"'{address}' is not an http:// or https:// address");
        }

        if (uri.Scheme == "http" && !Allowed(uri))
        {
            throw AwsCredentials.Failed(Provider, $"'{address}' is plain http to a host that is neither a loopback address nor the ECS or EKS agent's (169.254.170.2, 169.254.170.23, fd00:ec2::23)");
        }

        return new ContainerCredentials(uri, env);
    }

    private static bool Allowed(Uri uri)
    {
        if (uri.IsLoopback)
        {
            return true;
        }

        return IPAddress.TryParse(uri.DnsSafeHost, out var ip)
            && (IPAddress.IsLoopback(ip) || ip.Equals(IPAddress.Parse("169.254.170.2")) || ip.Equals(IPAddress.Parse("169.254.170.23"))
                || (ip.AddressFamily == AddressFamily.InterNetworkV6 && ip.Equals(IPAddress.Parse("fd00:ec2::23"))));
    }

    public async Task<AwsCredentials> FetchAsync(CancellationToken cancel)
    {
        string? authorization = _env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
        if (_env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") is { } tokenFile)
        {
            try
            {
                authorization = (await File.ReadAllTextAsync(tokenFile, cancel).ConfigureAwait(false)).Trim();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw AwsCredentials.Failed(Provider, $"cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {tokenFile}: {e.Message}");
            }
        }

        using var http = CredentialHttp.Create(useProxy: false);
        try
        {
            var (status, json) = await CredentialHttp.SendAsync(http, () =>
            {
                var request = new HttpRequestMessage(HttpMethod.Get, _address);
                if (authorization is { Length: > 0 })
                {
                    request.Headers.TryAddWithoutValidation("Authorization", authorization);
                }

                return request;
            }, TimeSpan.FromSeconds(5), 3, cancel).ConfigureAwait(false);
            return status == HttpStatusCode.OK
                ? AwsCredentials.FromJson(json, Provider)
                : throw AwsCredentials.Failed(Provider, $"GET {_address} answered {(int)status}{(json.Length is > 0 and < 200 ? ": " + json.Trim() : "")}");
        }
        catch (HttpRequestException e)
        {
            throw AwsCredentials.Failed(Provider, $"GET {_address}: {e.Message}");
        }
    }
}
