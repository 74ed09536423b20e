using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Web;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// The AWS credential services diffkeeper reads, served on 127.0.0.1 because the real ones (the EC2 instance
/// metadata service at 169.254.169.254, STS, the ECS/EKS container agent) are unreachable here. Each speaks the
/// real protocol, as AWS documents it and the SDKs use it, and checks what the client sends:
/// <list type="bullet">
/// <item>IMDSv2: <c>PUT /latest/api/token</c> needs <c>X-aws-ec2-metadata-token-ttl-seconds</c> (1 to 21600);
/// <c>GET /latest/meta-data/iam/security-credentials/[ROLE]</c> needs that token in <c>X-aws-ec2-metadata-token</c>
/// (401 otherwise) and answers the role name, then the credentials JSON (Code, Type, AccessKeyId, SecretAccessKey,
/// Token, Expiration);</item>
/// <item>STS: <c>POST /sts/</c>, the query API's form body with Action=AssumeRoleWithWebIdentity and
/// Version=2011-06-15; a wrong token or role is STS's <c>ErrorResponse</c> (400 InvalidIdentityToken / AccessDenied);
/// the answer is <c>AssumeRoleWithWebIdentityResponse</c> XML; Action=AssumeRole must be signed (Signature Version 4,
/// service sts): the server recomputes the signature from the request it received (the SignedHeaders' values, the
/// body's SHA-256) with the secret of the caller's access key id (<see cref="Secrets"/>, or of the credentials it
/// handed out itself, known by the session token in x-amz-security-token) and answers a wrong one with STS's 403
/// SignatureDoesNotMatch, an unknown key id with 403 InvalidClientTokenId, a role the key may not assume (or a wrong
/// ExternalId) with 403 AccessDenied (<see cref="Roles"/>); the answer is <c>AssumeRoleResponse</c> XML;</item>
/// <item>the container endpoint: <c>GET /v1/credentials</c> needs the Authorization header (403 otherwise).</item>
/// </list>
/// The credentials handed out are s3rver's (S3RVER/S3RVER), so a diffkeeper that signs with them is let in by the
/// test's real S3 server. Every request is logged.
/// </summary>
internal sealed class AwsCredentialServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly List<string> _log = [];
    private readonly HashSet<string> _tokens = [];
    private readonly Dictionary<string, (string KeyId, string Secret)> _issuedKeys = new(StringComparer.Ordinal); // by session token
    private readonly Task _loop;
    private int _issued;

    public AwsCredentialServer()
    {
        for (var tries = 0; ; tries++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            Port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
            try
            {
                _listener.Start();
                break;
            }
            catch (HttpListenerException) when (tries < 5)
            {
                // the port was taken between the probe and the listener: another one
            }
        }

        _loop = Task.Run(ServeAsync);
    }

    public int Port { get; }

    public string Address => $"http://127.0.0.1:{Port}";

    /// <summary>The instance's role; null: the instance has none (the role listing answers 404).</summary>
    public string? Role { get; set; } = "dk-fleet-role";

    /// <summary>How long the credentials handed out are valid.</summary>
    public TimeSpan Lifetime { get; set; } = TimeSpan.FromHours(1);

    public string RoleArn { get; set; } = "arn:aws:iam::123456789012:role/dk-ci";

    public string WebIdentityToken { get; set; } = "eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl";

    public string ContainerAuthorization { get; set; } = "Bearer pod-identity-token";

    /// <summary>The long-term access keys STS knows: key id to secret.</summary>
    public Dictionary<string, string> Secrets { get; } = new(StringComparer.Ordinal);

    /// <summary>The roles AssumeRole hands out, by ARN.</summary>
    public Dictionary<string, RoleGrant> Roles { get; } = new(StringComparer.Ordinal);

    /// <summary>
    /// A role: the access key id allowed to assume it (its trust policy), the ExternalId it requires (null: none), and
    /// the credentials it hands out (s3rver's by default, so the last role of a chain is let in by S3).
    /// </summary>
    public sealed record RoleGrant(string TrustedKeyId, string? ExternalId = null, string AccessKeyId = "S3RVER", string SecretAccessKey = "S3RVER");

    /// <summary>"METHOD path" of every request, in order, with the failures the server answered.</summary>
    public List<string> Log
    {
        get
        {
            lock (_log)
            {
                return [.. _log];
            }
        }
    }

    public int Count(string prefix) => Log.Count(l => l.StartsWith(prefix, StringComparison.Ordinal));

    private async Task ServeAsync()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }

            try
            {
                Answer(context);
            }
            catch (Exception e)
            {
                Note($"server error {e.Message}");
                Reply(context, 500, "text/plain", e.Message);
            }
        }
    }

    private void Answer(HttpListenerContext context)
    {
        var request = context.Request;
        var path = request.Url!.AbsolutePath;
        var line = $"{request.HttpMethod} {path}";
        const string credentialsPath = "/latest/meta-data/iam/security-credentials/";
        if (request.HttpMethod == "PUT" && path == "/latest/api/token")
        {
            if (!int.TryParse(request.Headers["X-aws-ec2-metadata-token-ttl-seconds"], NumberStyles.None, CultureInfo.InvariantCulture, out var ttl) || ttl is < 1 or > 21600)
            {
                Note(line + " -> 400 (no TTL header)");
                Reply(context, 400, "text/plain", "");
                return;
            }

            var token = "imds-token-" + Interlocked.Increment(ref _issued).ToString(CultureInfo.InvariantCulture);
            lock (_tokens)
            {
                _tokens.Add(token);
            }

            Note(line);
            Reply(context, 200, "text/plain", token);
        }
        else if (request.HttpMethod == "GET" && path.StartsWith(credentialsPath, StringComparison.Ordinal))
        {
            bool known;
            lock (_tokens)
            {
                known = request.Headers["X-aws-ec2-metadata-token"] is { } t && _tokens.Contains(t);
            }

            if (!known)
            {
                Note(line + " -> 401 (no token)");
                Reply(context, 401, "text/plain", "");
                return;
            }

            var role = path[credentialsPath.Length..];
            Note(line);
            if (Role is null || (role.Length > 0 && role != Role))
            {
                Reply(context, 404, "text/html", "<html><body>404 - Not Found</body></html>");
            }
            else if (role.Length == 0)
            {
                Reply(context, 200, "text/plain", Role);
            }
            else
            {
                Reply(context, 200, "text/plain", CredentialsJson(imds: true));
            }
        }
        else if (request.HttpMethod == "POST" && path == "/sts/")
        {
            using var buffer = new MemoryStream();
            request.InputStream.CopyTo(buffer);
            var body = buffer.ToArray();
            var form = HttpUtility.ParseQueryString(Encoding.UTF8.GetString(body));
            if (form["Action"] == "AssumeRole")
            {
                AssumeRole(context, line, form, body);
                return;
            }

            Note($"{line} Action={form["Action"]} Version={form["Version"]} RoleArn={form["RoleArn"]} RoleSessionName={form["RoleSessionName"]} token={form["WebIdentityToken"]}");
            if (form["Action"] != "AssumeRoleWithWebIdentity" || form["Version"] != "2011-06-15" || string.IsNullOrEmpty(form["RoleSessionName"]))
            {
                StsError(context, 400, "InvalidAction", "Could not find operation " + form["Action"]);
            }
            else if (form["WebIdentityToken"] != WebIdentityToken)
            {
                StsError(context, 400, "InvalidIdentityToken", "Couldn't retrieve verification key from your identity provider");
            }
            else if (form["RoleArn"] != RoleArn)
            {
                StsError(context, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity");
            }
            else
            {
                var expiration = (DateTimeOffset.UtcNow + Lifetime).ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
                Reply(context, 200, "text/xml", $"""
                    <AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
                      <AssumeRoleWithWebIdentityResult>
                        <Audience>sts.amazonaws.com</Audience>
                        <AssumedRoleUser><AssumedRoleId>AROAEXAMPLE:{form["RoleSessionName"]}</AssumedRoleId><Arn>{RoleArn}</Arn></AssumedRoleUser>
                        <Provider>oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE</Provider>
                        <Credentials>
                          <AccessKeyId>S3RVER</AccessKeyId>
                          <SecretAccessKey>S3RVER</SecretAccessKey>
                          <SessionToken>FwoGZXIvYXdzEJr//////////wEaDA&amp;sts</SessionToken>
                          <Expiration>{expiration}</Expiration>
                        </Credentials>
                        <SubjectFromWebIdentityToken>system:serviceaccount:ci:runner</SubjectFromWebIdentityToken>
                      </AssumeRoleWithWebIdentityResult>
                      <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
                    </AssumeRoleWithWebIdentityResponse>
                    """);
            }
        }
        else if (request.HttpMethod == "GET" && path == "/v1/credentials")
        {
            if (request.Headers["Authorization"] != ContainerAuthorization)
            {
                Note(line + " -> 403 (authorization)");
                Reply(context, 403, "application/json", """{"code":"AccessDeniedException","message":"invalid token"}""");
                return;
            }

            Note(line);
            Reply(context, 200, "application/json", CredentialsJson(imds: false));
        }
        else
        {
            Note(line + " -> 404");
            Reply(context, 404, "text/plain", "");
        }
    }

    private void AssumeRole(HttpListenerContext context, string line, System.Collections.Specialized.NameValueCollection form, byte[] body)
    {
        var request = context.Request;
        var authorization = request.Headers["Authorization"] ?? "";
        string Part(string name) => authorization.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries)
            .FirstOrDefault(p => p.StartsWith(name + "=", StringComparison.Ordinal))?[(name.Length + 1)..] ?? "";
        var scope = Part("Credential").Split('/');
        var keyId = scope[0];
        Note($"{line} Action=AssumeRole Version={form["Version"]} RoleArn={form["RoleArn"]} RoleSessionName={form["RoleSessionName"]} " +
            $"ExternalId={form["ExternalId"]} DurationSeconds={form["DurationSeconds"]} key={keyId}");
        if (!authorization.StartsWith("AWS4-HMAC-SHA256 ", StringComparison.Ordinal) || scope.Length != 5 || scope[3] != "sts" || scope[4] != "aws4_request")
        {
            StsError(context, 403, "IncompleteSignature", "Request must contain a signature that conforms to AWS standards");
            return;
        }

        string? secret;
        lock (_issuedKeys)
        {
            secret = request.Headers["x-amz-security-token"] is { } token && _issuedKeys.TryGetValue(token, out var issued) && issued.KeyId == keyId
                ? issued.Secret
                : Secrets.GetValueOrDefault(keyId);
        }

        if (secret is null)
        {
            StsError(context, 403, "InvalidClientTokenId", "The security token included in the request is invalid.");
            return;
        }

        // The signature recomputed from what arrived: the canonical request of the signed headers' values and the body's hash.
        var signedHeaders = Part("SignedHeaders");
        var amzDate = request.Headers["x-amz-date"] ?? "";
        var canonical = new StringBuilder().Append(request.HttpMethod).Append('\n').Append(request.RawUrl!.Split('?')[0]).Append('\n')
            .Append('\n'); // no query string: the parameters are in the body
        foreach (var name in signedHeaders.Split(';'))
        {
            canonical.Append(name).Append(':').Append((request.Headers[name] ?? "").Trim()).Append('\n');
        }

        canonical.Append('\n').Append(signedHeaders).Append('\n').Append(Convert.ToHexStringLower(SHA256.HashData(body)));
        var stringToSign = $"AWS4-HMAC-SHA256\n{amzDate}\n{string.Join('/', scope[1..])}\n{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical.ToString())))}";
        var key = Encoding.UTF8.GetBytes("AWS4" + secret);
        foreach (var step in scope[1..])
        {
            key = HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(step));
        }

        if (!signedHeaders.Split(';').Contains("host") || !amzDate.StartsWith(scope[1], StringComparison.Ordinal)
            || Convert.ToHexStringLower(HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(stringToSign))) != Part("Signature"))
        {
            StsError(context, 403, "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.");
            return;
        }

        var roleArn = form["RoleArn"] ?? "";
        if (form["Version"] != "2011-06-15" || string.IsNullOrEmpty(form["RoleSessionName"]))
        {
            StsError(context, 400, "ValidationError", "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null");
        }
        else if (!Roles.TryGetValue(roleArn, out var role) || role.TrustedKeyId != keyId || role.ExternalId != form["ExternalId"])
        {
            StsError(context, 403, "AccessDenied", $"User: arn:aws:iam::123456789012:user/{keyId} is not authorized to perform: sts:AssumeRole on resource: {roleArn}");
        }
        else
        {
            var lifetime = form["DurationSeconds"] is { } d ? TimeSpan.FromSeconds(int.Parse(d, CultureInfo.InvariantCulture)) : Lifetime;
            var token = $"assumed-{roleArn.Split('/')[^1]}-{Interlocked.Increment(ref _issued).ToString(CultureInfo.InvariantCulture)}";
            lock (_issuedKeys)
            {
                _issuedKeys[token] = (role.AccessKeyId, role.SecretAccessKey);
            }

            Reply(context, 200, "text/xml", $"""
                <AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
                  <AssumeRoleResult>
                    <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/{roleArn.Split('/')[^1]}/{form["RoleSessionName"]}</Arn><AssumedRoleId>AROA3XFRBF535PLBIFPI4:{form["RoleSessionName"]}</AssumedRoleId></AssumedRoleUser>
                    <Credentials>
                      <AccessKeyId>{role.AccessKeyId}</AccessKeyId>
                      <SecretAccessKey>{role.SecretAccessKey}</SecretAccessKey>
                      <SessionToken>{token}</SessionToken>
                      <Expiration>{(DateTimeOffset.UtcNow + lifetime).ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture)}</Expiration>
                    </Credentials>
                    <PackedPolicySize>6</PackedPolicySize>
                  </AssumeRoleResult>
                  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
                </AssumeRoleResponse>
                """);
        }
    }

    private string CredentialsJson(bool imds)
    {
        var now = DateTimeOffset.UtcNow;
        var expiration = (now + Lifetime).ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
        return imds
            ? $$"""{"Code":"Success","LastUpdated":"{{now:yyyy-MM-ddTHH:mm:ssZ}}","Type":"AWS-HMAC","AccessKeyId":"S3RVER","SecretAccessKey":"S3RVER","Token":"imds-session-token","Expiration":"{{expiration}}"}"""
            : $$"""{"AccessKeyId":"S3RVER","SecretAccessKey":"S3RVER","Token":"container-session-token","AccountId":"123456789012","Expiration":"{{expiration}}"}""";
    }

    private static void StsError(HttpListenerContext context, int status, string code, string message) =>
        Reply(context, status, "text/xml", $"""
            <ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
              <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>
              <RequestId>d8a8b3a6-0000-0000-0000-000000000000</RequestId>
            </ErrorResponse>
            """);

    private static void Reply(HttpListenerContext context, int status, string type, string body)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        context.Response.StatusCode = status;
        context.Response.ContentType = type;
        context.Response.ContentLength64 = bytes.Length;
        context.Response.OutputStream.Write(bytes);
        context.Response.Close();
    }

    private void Note(string line)
    {
        lock (_log)
        {
            _log.Add(line);
        }
    }

    public void Dispose()
    {
        // Close alone: after Stop, the managed HttpListener's Close looks its endpoint up again and, finding none, binds
        // the port anew to remove the prefix; when another test has taken that port meanwhile, Close throws
        // "Address already in use" (one CI failure).
        _listener.Close();
        _loop.Wait(TimeSpan.FromSeconds(5));
    }
}
