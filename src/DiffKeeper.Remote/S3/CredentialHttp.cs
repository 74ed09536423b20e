using System.Net;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// The HTTP exchanges of the credential providers (instance metadata, container endpoint, STS): one request with a
/// deadline of its own, tried again on a transient failure (no connection, no answer in time, 5xx, 429).
/// </summary>
internal static class CredentialHttp
{
    /// <summary>A client for one provider; <paramref name="useProxy"/> false for the link-local metadata addresses, which no proxy reaches.</summary>
    public static HttpClient Create(bool useProxy) => new(new SocketsHttpHandler
    {
        UseProxy = useProxy,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        PooledConnectionIdleTimeout = TimeSpan.FromSeconds(30),
    })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    /// <summary>
    /// Sends what <paramref name="request"/> makes (a new message per try) and returns the last answer's status and
    /// body; after <paramref name="attempts"/> tries without an answer, throws <see cref="HttpRequestException"/>
    /// saying why (its message is the reason, for the provider's one line).
    /// </summary>
    public static async Task<(HttpStatusCode Status, string Body)> SendAsync(HttpClient http, Func<HttpRequestMessage> request, TimeSpan timeout,
        int attempts, CancellationToken cancel)
    {
        for (var attempt = 1; ; attempt++)
        {
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            deadline.CancelAfter(timeout);
            string failure;
            try
            {
                using var message = request();
                using var response = await http.SendAsync(message, deadline.Token).ConfigureAwait(false);
                var body = await response.Content.ReadAsStringAsync(deadline.Token).ConfigureAwait(false);
                if ((int)response.StatusCode < 500 && response.StatusCode != HttpStatusCode.TooManyRequests || attempt >= attempts)
                {
                    return (response.StatusCode, body);
                }

                failure = $"answered {(int)response.StatusCode}";
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                failure = $"no answer in {timeout.TotalSeconds:0.#} s";
            }
            catch (HttpRequestException e)
            {
                failure = e.InnerException is { } inner ? $"{e.Message} ({inner.Message})" : e.Message;
            }

            if (attempt >= attempts)
            {
                throw new HttpRequestException(failure);
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100 << attempt), cancel).ConfigureAwait(false);
        }
    }
}
