using System.Globalization;
using System.Net;
using System.Text;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// One call of STS's query API (Version 2011-06-15): a form POST of Action, Version and the action's parameters,
/// answered with <c>{Action}Result/Credentials</c> (AccessKeyId, SecretAccessKey, SessionToken, Expiration) or an
/// <c>ErrorResponse</c> whose Code and Message the failure quotes. AssumeRoleWithWebIdentity goes unsigned;
/// AssumeRole is signed (SigV4, service "sts") with the caller's credentials, anew for every try. STS is at
/// AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL, else https://sts.REGION.amazonaws.com, as the SDKs resolve it. 3 tries
/// on no answer (10 s each), 5xx, 429 and IDPCommunicationError.
/// </summary>
internal static class Sts
{
    private const int Attempts = 3;

    /// <summary>The STS address the environment names, else the region's; a malformed one is a failure of <paramref name="provider"/>.</summary>
    public static Uri Endpoint(Func<string, string?> env, string region, string provider)
    {
        var endpoint = env("AWS_ENDPOINT_URL_STS") ?? env("AWS_ENDPOINT_URL") ?? $"https://sts.{region}.amazonaws.com";
        return Uri.TryCreate(endpoint, UriKind.Absolute, out var sts) && sts.Scheme is "http" or "https"
            ? sts
            : throw AwsCredentials.Failed(provider, $"the STS endpoint '{endpoint}' is not an http:// or https:// address");
    }

    /// <summary>A session name when the configuration gives none, as the SDKs make one: unique per fetch.</summary>
    public static string SessionName() => "diffkeeper-" + DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// Sends <paramref name="action"/> with <paramref name="parameters"/> (RoleArn first: failures name it), signed with
    /// <paramref name="signWith"/> for <paramref name="region"/> when given, and returns the credentials STS answers.
    /// </summary>
    public static async Task<AwsCredentials> CallAsync(string provider, Uri sts, string action, IReadOnlyList<(string Name, string Value)> parameters,
        AwsCredentials? signWith, string region, CancellationToken cancel)
    {
        var roleArn = parameters[0].Value;
        var form = new StringBuilder($"Action={action}&Version=2011-06-15");
        foreach (var (name, value) in parameters)
        {
            form.Append('&').Append(name).Append('=').Append(SigV4.Encode(value, keepSlash: false));
        }

        var body = Encoding.UTF8.GetBytes(form.ToString());
        HttpRequestMessage Request()
        {
            var request = new HttpRequestMessage(HttpMethod.Post, sts) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new("application/x-www-form-urlencoded") { CharSet = "utf-8" };
            if (signWith is not null)
            {
                SigV4.Sign(request, body, signWith, region, DateTime.UtcNow, "sts");
            }

            return request;
        }

        using var http = CredentialHttp.Create(useProxy: true);
        for (var attempt = 1; ; attempt++)
        {
            HttpStatusCode status;
            string xml;
            try
            {
                (status, xml) = await CredentialHttp.SendAsync(http, Request, TimeSpan.FromSeconds(10), Attempts, cancel).ConfigureAwait(false);
            }
            catch (HttpRequestException e)
            {
                throw AwsCredentials.Failed(provider, $"STS {action} at {sts}: {e.Message}");
            }

            try
            {
                if (status == HttpStatusCode.OK)
                {
                    var credentials = S3Xml.Elements(xml, "Credentials").FirstOrDefault()
                        ?? throw AwsCredentials.Failed(provider, $"STS {action} at {sts} answered without Credentials");
                    var id = S3Xml.Text(credentials, "AccessKeyId");
                    var secret = S3Xml.Text(credentials, "SecretAccessKey");
                    return string.IsNullOrEmpty(id) || string.IsNullOrEmpty(secret)
                        ? throw AwsCredentials.Failed(provider, $"STS {action} at {sts} answered without AccessKeyId and SecretAccessKey")
                        : new AwsCredentials(id, secret, S3Xml.Text(credentials, "SessionToken"),
                            AwsCredentials.ParseExpiration(S3Xml.Text(credentials, "Expiration"), provider), provider);
                }

                var code = S3Xml.Text(xml, "Code") ?? ((int)status).ToString(CultureInfo.InvariantCulture);
                if (code == "IDPCommunicationError" && attempt < Attempts)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(200 << attempt), cancel).ConfigureAwait(false);
                    continue;
                }

                throw AwsCredentials.Failed(provider, $"STS {action} for {roleArn} answered {(int)status} {code}: {S3Xml.Text(xml, "Message") ?? "(no message)"}");
            }
            catch (FormatException e)
            {
                throw AwsCredentials.Failed(provider, $"STS {action} at {sts} answered {(int)status} with a malformed document ({e.Message})");
            }
        }
    }
}
