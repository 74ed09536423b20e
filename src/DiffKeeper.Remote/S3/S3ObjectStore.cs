using System.Net;
using Amazon.Runtime;
using Amazon.S3;
using Amazon.S3.Model;
using DiffKeeper.Core;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// <see cref="IObjectStore"/> on S3 through AWSSDK.S3 (it publishes under NativeAOT without trim or AOT warnings:
/// docs/benchmarks.md, "S3 client"). Configuration as the AWS tools read it: credentials from AWS_ACCESS_KEY_ID /
/// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or the AWS_PROFILE profile of ~/.aws/credentials; the region from
/// AWS_REGION / AWS_DEFAULT_REGION / ~/.aws/config (default us-east-1). AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL
/// points it at an S3-compatible server (MinIO, Ceph RGW, R2, a test server) and switches to path-style addressing,
/// which they all accept (DIFFKEEPER_S3_PATH_STYLE=0 or 1 forces either). Payloads are sent whole and signed, never
/// in aws-chunked encoding, and checksums only where S3 requires them: several compatible servers reject both.
/// </summary>
public sealed class S3ObjectStore : IObjectStore, IDisposable
{
    private readonly AmazonS3Client _client;
    private readonly S3Location _location;

    public S3ObjectStore(S3Location location, Func<string, string?> env)
    {
        _location = location;
        var endpoint = env("AWS_ENDPOINT_URL_S3") is { Length: > 0 } e1 ? e1 : env("AWS_ENDPOINT_URL") is { Length: > 0 } e2 ? e2 : null;
        var config = new AmazonS3Config
        {
            RequestChecksumCalculation = RequestChecksumCalculation.WHEN_REQUIRED,
            ResponseChecksumValidation = ResponseChecksumValidation.WHEN_REQUIRED,
            MaxConnectionsPerServer = 32,
            MaxErrorRetry = 4,
            Timeout = TimeSpan.FromSeconds(120),
        };
        if (endpoint is not null)
        {
            if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                throw new DiffKeeperException(ExitCode.Usage, $"the S3 endpoint '{endpoint}' is not an http:// or https:// address");
            }

            config.ServiceURL = endpoint;
            config.AuthenticationRegion = env("AWS_REGION") is { Length: > 0 } r ? r : env("AWS_DEFAULT_REGION") is { Length: > 0 } d ? d : "us-east-1";
        }

        config.ForcePathStyle = env("DIFFKEEPER_S3_PATH_STYLE") switch
        {
            "1" or "true" => true,
            "0" or "false" => false,
            _ => endpoint is not null,
        };
        try
        {
            _client = new AmazonS3Client(config);
        }
        catch (AmazonClientException e)
        {
            throw new DiffKeeperException(ExitCode.Usage, $"cannot set up the S3 client: {e.Message}", e);
        }
    }

    public static S3ObjectStore FromEnvironment(S3Location location) => new(location, Environment.GetEnvironmentVariable);

    public RequestCounters Counters { get; } = new();

    public string Name => _location.ToString();

    public async Task<byte[]?> GetAsync(string key, long offset = 0, long length = -1, CancellationToken cancel = default)
    {
        var request = new GetObjectRequest { BucketName = _location.Bucket, Key = _location.Key(key) };
        if (offset > 0 || length >= 0)
        {
            request.ByteRange = length >= 0 ? new ByteRange(offset, offset + length - 1) : new ByteRange($"bytes={offset}-");
        }

        return await Call("GET", key, async () =>
        {
            try
            {
                using var response = await _client.GetObjectAsync(request, cancel).ConfigureAwait(false);
                var bytes = new byte[response.ContentLength];
                await response.ResponseStream.ReadExactlyAsync(bytes, cancel).ConfigureAwait(false);
                Counters.Get(bytes.Length);
                return length >= 0 && bytes.Length != length
                    ? throw new DiffKeeperException(ExitCode.Corrupt, $"{Name}/{key} is shorter than its index says ({bytes.Length} of {length} bytes at {offset})")
                    : bytes;
            }
            catch (AmazonS3Exception e) when (e.StatusCode == HttpStatusCode.NotFound)
            {
                Counters.Get(0);
                return null;
            }
        }).ConfigureAwait(false);
    }

    public async Task<bool> PutAsync(string key, ReadOnlyMemory<byte> body, bool createOnly, CancellationToken cancel = default)
    {
        return await Call("PUT", key, async () =>
        {
            using var stream = new MemoryStream(body.ToArray(), writable: false);
            var request = new PutObjectRequest
            {
                BucketName = _location.Bucket,
                Key = _location.Key(key),
                InputStream = stream,
                AutoCloseStream = false,
                UseChunkEncoding = false,
                ContentType = "application/octet-stream",
            };
            if (createOnly)
            {
                request.IfNoneMatch = "*";
            }

            try
            {
                await _client.PutObjectAsync(request, cancel).ConfigureAwait(false);
                Counters.Put(body.Length);
                return true;
            }
            catch (AmazonS3Exception e) when (createOnly && e.StatusCode is HttpStatusCode.PreconditionFailed or HttpStatusCode.Conflict)
            {
                Counters.Put(body.Length);
                return false;
            }
        }).ConfigureAwait(false);
    }

    public async Task<List<ObjectInfo>> ListAsync(string prefix, CancellationToken cancel = default)
    {
        var result = new List<ObjectInfo>();
        var strip = _location.Prefix.Length == 0 ? 0 : _location.Prefix.Length + 1;
        var request = new ListObjectsV2Request { BucketName = _location.Bucket, Prefix = _location.Key(prefix) };
        await Call("LIST", prefix, async () =>
        {
            do
            {
                var response = await _client.ListObjectsV2Async(request, cancel).ConfigureAwait(false);
                Counters.List();
                foreach (var o in response.S3Objects ?? [])
                {
                    result.Add(new ObjectInfo(o.Key[strip..], o.Size ?? 0, o.LastModified is { } m ? new DateTimeOffset(m.ToUniversalTime(), TimeSpan.Zero) : DateTimeOffset.MinValue));
                }

                request.ContinuationToken = response.IsTruncated == true ? response.NextContinuationToken : null;
            }
            while (request.ContinuationToken is not null);
            return true;
        }).ConfigureAwait(false);
        result.Sort((a, b) => string.CompareOrdinal(a.Key, b.Key));
        return result;
    }

    public async Task DeleteAsync(string key, CancellationToken cancel = default)
    {
        await Call("DELETE", key, async () =>
        {
            await _client.DeleteObjectAsync(_location.Bucket, _location.Key(key), cancel).ConfigureAwait(false);
            Counters.Delete();
            return true;
        }).ConfigureAwait(false);
    }

    /// <summary>The SDK retried transient failures already; what is left becomes one line naming the request (exit 10).</summary>
    private async Task<T> Call<T>(string method, string key, Func<Task<T>> call)
    {
        try
        {
            return await call().ConfigureAwait(false);
        }
        catch (AmazonS3Exception e)
        {
            throw new DiffKeeperException(ExitCode.SystemError,
                $"S3 {method} {Name}/{key} answered {(int)e.StatusCode} {e.ErrorCode}: {e.Message}", e);
        }
        catch (AmazonClientException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"S3 {method} {Name}/{key} failed: {Flatten(e)}", e);
        }
        catch (HttpRequestException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"S3 {method} {Name}/{key} failed: {Flatten(e)}", e);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or InvalidDataException or System.Xml.XmlException)
        {
            // The SDK could not read the answer: seen from an S3-compatible server killed mid-PUT, which then serves
            // the object with an empty ETag (the SDK throws on parsing it). The object is damaged, not the link.
            throw new DiffKeeperException(ExitCode.Corrupt, $"S3 {method} {Name}/{key}: the server's answer is malformed ({Flatten(e)})", e);
        }
    }

    private static string Flatten(Exception e) => e.InnerException is { } inner ? $"{e.Message} ({Flatten(inner)})" : e.Message;

    public void Dispose() => _client.Dispose();
}
