using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// AWS Signature Version 4 for S3 requests (and STS's AssumeRole, service "sts") sent with the whole payload (its SHA-256 in x-amz-content-sha256, never
/// aws-chunked): the canonical request, the string to sign and the Authorization header, as the AWS documentation
/// "Create a signed AWS API request" specifies them. Signs host, x-amz-content-sha256, x-amz-date and, for
/// temporary credentials, x-amz-security-token.
/// </summary>
internal static class SigV4
{
    private const string Algorithm = "AWS4-HMAC-SHA256";

    /// <summary>Adds x-amz-date, x-amz-content-sha256, x-amz-security-token and Authorization to <paramref name="request"/>.</summary>
    public static void Sign(HttpRequestMessage request, ReadOnlySpan<byte> payload, AwsCredentials credentials, string region, DateTime utcNow,
        string service = "s3")
    {
        var uri = request.RequestUri!;
        var amzDate = utcNow.ToString("yyyyMMdd'T'HHmmss'Z'", CultureInfo.InvariantCulture);
        var date = amzDate[..8];
        var payloadHash = Convert.ToHexStringLower(SHA256.HashData(payload));
        var host = uri.IsDefaultPort ? uri.Host : $"{uri.Host}:{uri.Port.ToString(CultureInfo.InvariantCulture)}";

        var headers = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["host"] = host,
            ["x-amz-content-sha256"] = payloadHash,
            ["x-amz-date"] = amzDate,
        };
        if (credentials.SessionToken is { } token)
        {
            headers["x-amz-security-token"] = token;
        }

        var signedHeaders = string.Join(';', headers.Keys);
        var canonical = new StringBuilder()
            .Append(request.Method.Method).Append('\n')
            .Append(uri.AbsolutePath).Append('\n') // already encoded once by S3ObjectStore.Address, as S3 expects
            .Append(CanonicalQuery(uri.Query)).Append('\n');
        foreach (var (name, value) in headers)
        {
            canonical.Append(name).Append(':').Append(value).Append('\n');
        }

        canonical.Append('\n').Append(signedHeaders).Append('\n').Append(payloadHash);

        var scope = $"{date}/{region}/{service}/aws4_request";
        var stringToSign = $"{Algorithm}\n{amzDate}\n{scope}\n{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical.ToString())))}";
        var key = Hmac(Encoding.UTF8.GetBytes("AWS4" + credentials.SecretAccessKey), date);
        key = Hmac(key, region);
        key = Hmac(key, service);
        key = Hmac(key, "aws4_request");
        var signature = Convert.ToHexStringLower(Hmac(key, stringToSign));

        request.Headers.TryAddWithoutValidation("x-amz-date", amzDate);
        request.Headers.TryAddWithoutValidation("x-amz-content-sha256", payloadHash);
        if (credentials.SessionToken is { } t)
        {
            request.Headers.TryAddWithoutValidation("x-amz-security-token", t);
        }

        request.Headers.TryAddWithoutValidation("Authorization",
            $"{Algorithm} Credential={credentials.AccessKeyId}/{scope}, SignedHeaders={signedHeaders}, Signature={signature}");
    }

    /// <summary>RFC 3986 percent-encoding of UTF-8, every byte but A-Z a-z 0-9 - . _ ~ (and '/' when <paramref name="keepSlash"/>).</summary>
    public static string Encode(string value, bool keepSlash)
    {
        var sb = new StringBuilder(value.Length + 16);
        foreach (var b in Encoding.UTF8.GetBytes(value))
        {
            if (b is (>= (byte)'A' and <= (byte)'Z') or (>= (byte)'a' and <= (byte)'z') or (>= (byte)'0' and <= (byte)'9')
                or (byte)'-' or (byte)'.' or (byte)'_' or (byte)'~' || (keepSlash && b == (byte)'/'))
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return sb.ToString();
    }

    /// <summary>The query's parameters sorted by name then value; they were encoded by <see cref="Encode"/> already.</summary>
    private static string CanonicalQuery(string query)
    {
        if (query.Length <= 1)
        {
            return "";
        }

        var pairs = query[1..].Split('&', StringSplitOptions.RemoveEmptyEntries)
            .Select(p => p.IndexOf('=', StringComparison.Ordinal) is var eq and >= 0 ? (Name: p[..eq], Value: p[(eq + 1)..]) : (Name: p, Value: ""))
            .OrderBy(p => p.Name, StringComparer.Ordinal).ThenBy(p => p.Value, StringComparer.Ordinal);
        return string.Join('&', pairs.Select(p => p.Name + "=" + p.Value));
    }

    private static byte[] Hmac(byte[] key, string data) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(data));
}
