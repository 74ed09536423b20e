using System.Globalization;
using System.Net;
using System.Text;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// A role's credentials for a web identity token (EKS IRSA, GitHub's OIDC): STS's query API action
/// AssumeRoleWithWebIdentity (Version 2011-06-15), an unsigned form POST of RoleArn, RoleSessionName and
/// WebIdentityToken (the token file is read again at every fetch: Kubernetes rotates it), answered with
/// <c>AssumeRoleWithWebIdentityResult/Credentials</c> (AccessKeyId, SecretAccessKey, SessionToken, Expiration) or an
/// <c>ErrorResponse</c> whose Code and Message the failure quotes. STS is at AWS_ENDPOINT_URL_STS, else
/// AWS_ENDPOINT_URL, else https://sts.REGION.amazonaws.com, as the SDKs resolve it. 3 tries on no answer (10 s
/// each), 5xx, 429 and IDPCommunicationError.
/// </summary>
internal sealed class WebIdentityCredentials(string provider, Uri sts, string roleArn, string tokenFile, string? sessionName)
{
    private const int Attempts = 3;

    public async Task<AwsCredentials> AssumeAsync(CancellationToken cancel)
    {
        string token;
        try
        {
            token = (await File.ReadAllTextAsync(tokenFile, cancel).ConfigureAwait(false)).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw AwsCredentials.Failed(provider, $"cannot read the token file {tokenFile}: {e.Message}");
        }

        if (token.Length == 0)
        {
            throw AwsCredentials.Failed(provider, $"the token file {tokenFile} is empty");
        }

        var session = sessionName ?? "diffkeeper-" + DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);
        var form = $"Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn={SigV4.Encode(roleArn, keepSlash: false)}"
            + $"&RoleSessionName={SigV4.Encode(session, keepSlash: false)}&WebIdentityToken={SigV4.Encode(token, keepSlash: false)}";
        using var http = CredentialHttp.Create(useProxy: true);
        for (var attempt = 1; ; attempt++)
        {
            HttpStatusCode status;
            string xml;
            try
            {
                (status, xml) = await CredentialHttp.SendAsync(http, () => new HttpRequestMessage(HttpMethod.Post, sts)
                {
                    Content = new StringContent(form, Encoding.UTF8, "application/x-www-form-urlencoded"),
                }, TimeSpan.FromSeconds(10), Attempts, cancel).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw AwsCredentials.Failed(provider, $"STS AssumeRoleWithWebIdentity at {sts}: {e.Message}");
            }

            try
            {
                if (status == HttpStatusCode.OK)
                {
                    var credentials = S3Xml.Elements(xml, "Credentials").FirstOrDefault()
                        ?? throw AwsCredentials.Failed(provider, $"STS AssumeRoleWithWebIdentity at {sts} answered without Credentials");
                    var id = S3Xml.Text(credentials, "AccessKeyId");
                    var secret = S3Xml.Text(credentials, "SecretAccessKey");
                    return string.IsNullOrEmpty(id) || string.IsNullOrEmpty(secret)
                        ? throw AwsCredentials.Failed(provider, $"STS AssumeRoleWithWebIdentity at {sts} answered without AccessKeyId and SecretAccessKey")
                        : new AwsCredentials(id, secret, S3Xml.Text(credentials, "SessionToken"),
                            AwsCredentials.ParseExpiration(S3Xml.Text(credentials, "Expiration"), provider), provider);
                }

                var code = S3Xml.Text(xml, "Code") ?? ((int)status).ToString(CultureInfo.InvariantCulture);
                if (code == "IDPCommunicationError" && attempt < Attempts)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(200 << attempt), cancel).ConfigureAwait(false);
                    continue;
                }

                throw AwsCredentials.Failed(provider, $"STS AssumeRoleWithWebIdentity for {roleArn} answered {(int)status} {code}: {S3Xml.Text(xml, "Message") ?? "(no message)"}");
            }
            catch (FormatException e)
            {
                throw AwsCredentials.Failed(provider, $"STS AssumeRoleWithWebIdentity at {sts} answered {(int)status} with a malformed document ({e.Message})");
            }
        }
    }
}
