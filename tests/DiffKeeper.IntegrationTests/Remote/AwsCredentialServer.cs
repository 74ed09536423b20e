using System.Globalization;
using System.Net;
using System.Net.Sockets;
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
/// the answer is <c>AssumeRoleWithWebIdentityResponse</c> XML;</item>
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
            using var body = new StreamReader(request.InputStream, Encoding.UTF8);
            var form = HttpUtility.ParseQueryString(body.ReadToEnd());
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
