using System.Buffers;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using DiffKeeper.Core;
using Microsoft.Win32.SafeHandles;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// <see cref="IObjectStore"/> on S3: the four requests it needs (GET with an optional range, PUT with an optional
/// If-None-Match: *, ListObjectsV2, DELETE) signed with Signature Version 4 and sent over HttpClient. Until
/// 2026-12-06 this was AWSSDK.S3, whose ~1,450 static bases cost every diffkeeper process 2.0 M of its 5.2 M
/// start-up instructions and 10 MB of binary, whatever the command (docs/benchmarks.md, "The whole-process floor").
/// Configuration as the AWS tools read it (<see cref="AwsSettings"/>), credentials as the SDKs' default chain finds them
/// (<see cref="CredentialChain"/>: the environment, web identity, the profile, the container endpoint, IMDSv2). An endpoint (AWS_ENDPOINT_URL_S3 or
/// AWS_ENDPOINT_URL: MinIO, Ceph RGW, R2, a test server) switches to path-style addressing, which they all accept
/// (DIFFKEEPER_S3_PATH_STYLE=0 or 1 forces either); a bucket name with a dot is always addressed by path (a TLS
/// certificate for *.host covers no dotted name). Payloads are sent whole and signed, never in aws-chunked encoding,
/// and no checksum headers are sent: several compatible servers reject both. Transient failures (no connection,
/// a timeout, 500, 502, 503, 504, 429, SlowDown, RequestTimeout, a clock skew S3 reports) are retried 4 times with
/// jittered exponential backoff (0.1 to 1.6 s between tries); a request is given 120 s.
/// </summary>
public sealed class S3ObjectStore : IObjectStore, IDisposable
{
    private const int MaxRetries = 4;
    private readonly HttpClient _http;
    private readonly S3Location _location;
    private readonly AwsSettings _settings;
    private readonly CredentialChain _credentials;
    private readonly bool _pathStyle;
    private TimeSpan _clockSkew;

    public S3ObjectStore(S3Location location, Func<string, string?> env)
    {
        _location = location;
        _settings = AwsSettings.Read(env);
        _credentials = new CredentialChain(_settings, env);
        _pathStyle = env("DIFFKEEPER_S3_PATH_STYLE") switch
        {
            "1" or "true" => true,
            "0" or "false" => false,
            _ => _settings.Endpoint is not null,
        } || location.Bucket.Contains('.', StringComparison.Ordinal);
        _http = new HttpClient(new SocketsHttpHandler
        {
            MaxConnectionsPerServer = 32,
            AutomaticDecompression = DecompressionMethods.None,
            UseCookies = false,
            PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
        })
        {
            Timeout = TimeSpan.FromSeconds(120),
        };
    }

    public static S3ObjectStore FromEnvironment(S3Location location) => new(location, Environment.GetEnvironmentVariable);

    public RequestCounters Counters { get; } = new();

    public string Name => _location.ToString();

    public async Task<byte[]?> GetAsync(string key, long offset = 0, long length = -1, CancellationToken cancel = default) =>
        await Call("GET", key, () => FetchAsync(key, offset, length, null, cancel), cancel).ConfigureAwait(false);

    /// <summary>
    /// The range streamed from the answer into <paramref name="file"/> through one pooled buffer, so a reader of
    /// many 8 MiB ranges holds no body in memory (docs/benchmarks.md, "S3 export: bodies streamed").
    /// </summary>
    public async Task<bool> ReadIntoAsync(string key, long offset, long length, SafeFileHandle file, CancellationToken cancel = default) =>
        await Call("GET", key, () => FetchAsync(key, offset, length, file, cancel), cancel).ConfigureAwait(false) is not null;

    /// <summary>GET of the object or a range of it: its bytes, or (with <paramref name="file"/>) an empty array once they are written there; null when absent.</summary>
    private async Task<byte[]?> FetchAsync(string key, long offset, long length, SafeFileHandle? file, CancellationToken cancel)
    {
        var ranged = offset > 0 || length >= 0;
        if (length == 0)
        {
            return [];
        }

        long streamed = -1;
        Func<HttpResponseMessage, CancellationToken, Task<byte[]>>? stream = file is null ? null : async (response, ct) =>
        {
            streamed = -1;
            if (response.StatusCode != HttpStatusCode.PartialContent || !HasETag(response.Headers.ETag?.Tag))
            {
                return await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false); // checked and written below
            }

            streamed = await StreamAsync(response, file, offset, length, ct).ConfigureAwait(false);
            return [];
        };
        var answer = await Send(HttpMethod.Get, key, Address(_location.Key(key), null), null,
            r => r.Headers.Range = ranged ? new RangeHeaderValue(offset, length >= 0 ? offset + length - 1 : null) : null, cancel, stream).ConfigureAwait(false);
        if (answer.Status == HttpStatusCode.NotFound)
        {
            Counters.Get(0);
            return null;
        }

        if (answer.Status is not (HttpStatusCode.OK or HttpStatusCode.PartialContent))
        {
            throw Failed("GET", key, answer);
        }

        // S3 always names an object's ETag. s3rver, killed between an object and its .md5 file, serves the object
        // without one: the object is damaged (RemoteStoreTests.DamagedIndexesInTheBucketAreSkippedAndTheirBlobsUploadedAgain).
        if (!HasETag(answer.ETag))
        {
            throw new InvalidDataException("the object has no ETag");
        }

        var bytes = answer.Body;
        var received = streamed >= 0 ? streamed : bytes.Length;
        if (streamed < 0 && ranged && answer.Status == HttpStatusCode.OK)
        {
            // A server that ignores Range sends the whole object: take the part asked for.
            var start = (int)Math.Min(offset, bytes.Length);
            var end = length >= 0 ? (int)Math.Min(offset + length, bytes.Length) : bytes.Length;
            bytes = bytes[start..end];
            received = bytes.Length;
        }

        Counters.Get(received);
        if (length >= 0 && received != length)
        {
            throw new DiffKeeperException(ExitCode.Corrupt, $"{Name}/{key} is shorter than its index says ({received} of {length} bytes at {offset})");
        }

        if (file is not null && streamed < 0)
        {
            RandomAccess.Write(file, bytes, offset);
        }

        return bytes;
    }

    private static bool HasETag(string? etag) => etag is not null && etag.Trim('"').Length > 0;

    /// <summary>Copies the answer's body into <paramref name="file"/> at <paramref name="offset"/>; returns the bytes written (never more than <paramref name="length"/>).</summary>
    private static async Task<long> StreamAsync(HttpResponseMessage response, SafeFileHandle file, long offset, long length, CancellationToken cancel)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            var body = await response.Content.ReadAsStreamAsync(cancel).ConfigureAwait(false);
            await using (body.ConfigureAwait(false))
            {
                long written = 0;
                var filled = 0;
                while (true)
                {
                    var n = await body.ReadAsync(buffer.AsMemory(filled), cancel).ConfigureAwait(false);
                    filled += n;
                    if (written + filled > length)
                    {
                        throw new InvalidDataException($"the server sent more than the {length} bytes asked for");
                    }

                    if (filled == buffer.Length || (n == 0 && filled > 0))
                    {
                        RandomAccess.Write(file, buffer.AsSpan(0, filled), offset + written);
                        written += filled;
                        filled = 0;
                    }

                    if (n == 0)
                    {
                        return written;
                    }
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    public async Task<bool> PutAsync(string key, ReadOnlyMemory<byte> body, bool createOnly, CancellationToken cancel = default)
    {
        return await Call("PUT", key, async () =>
        {
            var answer = await Send(HttpMethod.Put, key, Address(_location.Key(key), null), body.ToArray(),
                r => { if (createOnly) r.Headers.TryAddWithoutValidation("If-None-Match", "*"); }, cancel).ConfigureAwait(false);
            if (answer.Status is >= HttpStatusCode.OK and < HttpStatusCode.Ambiguous)
            {
                Counters.Put(body.Length);
                return true;
            }

            if (createOnly && answer.Status is HttpStatusCode.PreconditionFailed or HttpStatusCode.Conflict)
            {
                Counters.Put(body.Length);
                return false;
            }

            throw Failed("PUT", key, answer);
        }, cancel).ConfigureAwait(false);
    }

    public async Task<List<ObjectInfo>> ListAsync(string prefix, CancellationToken cancel = default)
    {
        var result = new List<ObjectInfo>();
        var strip = _location.Prefix.Length == 0 ? 0 : _location.Prefix.Length + 1;
        await Call("LIST", prefix, async () =>
        {
            string? token = null;
            do
            {
                var query = "list-type=2&prefix=" + SigV4.Encode(_location.Key(prefix), keepSlash: false)
                    + (token is null ? "" : "&continuation-token=" + SigV4.Encode(token, keepSlash: false));
                var answer = await Send(HttpMethod.Get, prefix, Address(null, query), null, null, cancel).ConfigureAwait(false);
                if (answer.Status != HttpStatusCode.OK)
                {
                    throw Failed("LIST", prefix, answer);
                }

                Counters.List();
                var xml = Encoding.UTF8.GetString(answer.Body);
                if (!xml.Contains("<ListBucketResult", StringComparison.Ordinal))
                {
                    throw new FormatException("the answer is not a ListBucketResult");
                }

                foreach (var o in S3Xml.Elements(xml, "Contents"))
                {
                    var objectKey = S3Xml.Text(o, "Key") ?? throw new FormatException("an object without a Key");
                    var size = S3Xml.Text(o, "Size") is { } s ? long.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture) : 0;
                    var modified = S3Xml.Text(o, "LastModified") is { } m
                        ? DateTimeOffset.Parse(m, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal).ToUniversalTime()
                        : DateTimeOffset.MinValue;
                    result.Add(new ObjectInfo(objectKey[strip..], size, modified));
                }

                token = S3Xml.Text(xml, "IsTruncated") == "true"
                    ? S3Xml.Text(xml, "NextContinuationToken") ?? throw new FormatException("a truncated listing without NextContinuationToken")
                    : null;
            }
            while (token is not null);
            return true;
        }, cancel).ConfigureAwait(false);
        result.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
        return result;
    }

    public async Task DeleteAsync(string key, CancellationToken cancel = default)
    {
        await Call("DELETE", key, async () =>
        {
            var answer = await Send(HttpMethod.Delete, key, Address(_location.Key(key), null), null, null, cancel).ConfigureAwait(false);
            if (answer.Status is not (>= HttpStatusCode.OK and < HttpStatusCode.Ambiguous or HttpStatusCode.NotFound))
            {
                throw Failed("DELETE", key, answer);
            }

            Counters.Delete();
            return true;
        }, cancel).ConfigureAwait(false);
    }

    /// <summary>The object's address (the bucket's, with <paramref name="objectKey"/> null), each key byte encoded once as S3 expects.</summary>
    private Uri Address(string? objectKey, string? query)
    {
        var endpoint = _settings.Endpoint;
        var scheme = endpoint?.Scheme ?? "https";
        var host = endpoint?.Host ?? $"s3.{_settings.Region}.amazonaws.com";
        var port = endpoint is { IsDefaultPort: false } ? ":" + endpoint.Port.ToString(CultureInfo.InvariantCulture) : "";
        var basePath = endpoint?.AbsolutePath.TrimEnd('/') ?? "";
        var keyPath = objectKey is null ? "" : "/" + SigV4.Encode(objectKey, keepSlash: true);
        var address = _pathStyle
            ? $"{scheme}://{host}{port}{basePath}/{_location.Bucket}{keyPath}"
            : $"{scheme}://{_location.Bucket}.{host}{port}{basePath}{(keyPath.Length == 0 ? "/" : keyPath)}";
        return new Uri(query is null ? address : address + "?" + query);
    }

    /// <summary>One answer of S3: its status, body, ETag and, for an error, S3's code and message.</summary>
    private sealed record Answer(HttpStatusCode Status, byte[] Body, string? ETag, string Code, string Message);

    /// <summary>Sends the request, retrying transient failures; the last answer is returned whatever its status.</summary>
    /// <remarks>A success's body is read by <paramref name="readSuccess"/> when given (a GET streamed into a file), else whole.</remarks>
    private async Task<Answer> Send(HttpMethod method, string key, Uri address, byte[]? body, Action<HttpRequestMessage>? headers, CancellationToken cancel,
        Func<HttpResponseMessage, CancellationToken, Task<byte[]>>? readSuccess = null)
    {
        for (var attempt = 0; ; attempt++)
        {
            AwsCredentials credentials;
            try
            {
                credentials = await _credentials.GetAsync(cancel).ConfigureAwait(false);
            }
            catch (DiffKeeperException e)
            {
                throw new DiffKeeperException(e.Code, $"S3 {method.Method} {Name}/{key} failed: {e.Message}", e);
            }

            try
            {
                using var request = new HttpRequestMessage(method, address);
                if (body is not null)
                {
                    request.Content = new ByteArrayContent(body);
                    request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                }

                headers?.Invoke(request);
                SigV4.Sign(request, body ?? [], credentials, _settings.Region, DateTime.UtcNow + _clockSkew);
                using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel).ConfigureAwait(false);
                var etag = response.Headers.TryGetValues("ETag", out var tags) ? tags.FirstOrDefault() : null;
                if (response.IsSuccessStatusCode)
                {
                    var ok = readSuccess is null ? await response.Content.ReadAsByteArrayAsync(cancel).ConfigureAwait(false) : await readSuccess(response, cancel).ConfigureAwait(false);
                    return new Answer(response.StatusCode, ok, etag, "", "");
                }

                var bytes = await response.Content.ReadAsByteArrayAsync(cancel).ConfigureAwait(false);

                var (code, message) = ErrorOf(bytes, response);
                var transient = response.StatusCode is HttpStatusCode.InternalServerError or HttpStatusCode.BadGateway
                    or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout or HttpStatusCode.TooManyRequests
                    || code is "SlowDown" or "RequestTimeout" or "RequestTimeTooSkewed" or "InternalError"
                    || (code == "ExpiredToken" && credentials.Expiration is not null);
                if (code == "ExpiredToken")
                {
                    _credentials.Expire(credentials); // the server's clock says so before ours: fetched again
                }

                if (!transient || attempt == MaxRetries)
                {
                    return new Answer(response.StatusCode, bytes, etag, code, message);
                }

                if (code == "RequestTimeTooSkewed" && response.Headers.Date is { } serverNow)
                {
                    _clockSkew = serverNow.UtcDateTime - DateTime.UtcNow;
                }
            }
            catch (Exception e) when (attempt < MaxRetries && (e is HttpRequestException or IOException
                || (e is TaskCanceledException && !cancel.IsCancellationRequested)))
            {
                // no connection, a connection cut, or the 120 s timeout: tried again
            }

            Counters.Retry();
            var ceiling = 200 << attempt;
            await Task.Delay(TimeSpan.FromMilliseconds(ceiling / 2 + Random.Shared.Next(ceiling / 2 + 1)), cancel).ConfigureAwait(false);
        }
    }

    /// <summary>S3's error code and message from an error answer's XML body, else from the HTTP status.</summary>
    private static (string Code, string Message) ErrorOf(byte[] body, HttpResponseMessage response)
    {
        try
        {
            var xml = Encoding.UTF8.GetString(body);
            if (S3Xml.Text(xml, "Code") is { Length: > 0 } code)
            {
                return (code, S3Xml.Text(xml, "Message") ?? code);
            }
        }
        catch (FormatException)
        {
            // not S3's error document: the status says it
        }

        var reason = response.ReasonPhrase ?? response.StatusCode.ToString();
        return (reason.Replace(" ", "", StringComparison.Ordinal), reason);
    }

    private DiffKeeperException Failed(string method, string key, Answer answer) =>
        new(ExitCode.SystemError, $"S3 {method} {Name}/{key} answered {(int)answer.Status} {answer.Code}: {answer.Message}");

    /// <summary>Failures after the retries become one line naming the request (exit 10); an answer that cannot be read, exit 5.</summary>
    private async Task<T> Call<T>(string method, string key, Func<Task<T>> call, CancellationToken cancel)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"S3 {method} {Name}/{key} failed: {Flatten(e)}", e);
        }
        catch (IOException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"S3 {method} {Name}/{key} failed: {Flatten(e)}", e);
        }
        catch (TaskCanceledException e) when (!cancel.IsCancellationRequested)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"S3 {method} {Name}/{key} failed: no answer in {_http.Timeout.TotalSeconds:0} s", e);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or OverflowException)
        {
            // The answer does not read as S3's: seen from an S3-compatible server killed mid-PUT, which then serves
            // the object without an ETag, or cut short. The object is damaged, not the link.
            throw new DiffKeeperException(ExitCode.Corrupt, $"S3 {method} {Name}/{key}: the server's answer is malformed ({Flatten(e)})", e);
        }
    }

    private static string Flatten(Exception e) => e.InnerException is { } inner ? $"{e.Message} ({Flatten(inner)})" : e.Message;

    public void Dispose()
    {
        _http.Dispose();
        _credentials.Dispose();
    }
}
