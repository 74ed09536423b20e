using System.Net;
using System.Net.Sockets;
using System.Text;
using DiffKeeper.Core;

namespace DiffKeeper.Cli.Metrics;

/// <summary>
/// A minimal HTTP/1.0-style server for <c>GET /metrics</c> and <c>GET /healthz</c>: one request per connection,
/// answered and closed. Requests are served one at a time on a background task; a slow client holds only itself
/// up for at most the read timeout.
/// </summary>
public sealed class MetricsEndpoint : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly Func<string> _metrics;
    private readonly Func<bool> _healthy;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _serving;

    private MetricsEndpoint(TcpListener listener, Func<string> metrics, Func<bool> healthy)
    {
        _listener = listener;
        _metrics = metrics;
        _healthy = healthy;
        _serving = Task.Run(ServeAsync);
    }

    public IPEndPoint EndPoint => (IPEndPoint)_listener.LocalEndpoint;

    /// <summary>Parses ":9911", "0.0.0.0:9911" or "127.0.0.1:0" (any free port).</summary>
    public static IPEndPoint ParseAddress(string text)
    {
        var colon = text.LastIndexOf(':');
        if (colon < 0 || !int.TryParse(text.AsSpan(colon + 1), out var port) || port is < 0 or > 65535)
        {
            throw new DiffKeeperException(ExitCode.Usage, $"--metrics-addr '{text}' is not HOST:PORT or :PORT (for example :9911)");
        }

        var host = text[..colon].Trim('[', ']');
        if (host.Length == 0)
        {
            return new IPEndPoint(IPAddress.Any, port);
        }

        return IPAddress.TryParse(host, out var ip)
            ? new IPEndPoint(ip, port)
            : throw new DiffKeeperException(ExitCode.Usage, $"--metrics-addr '{text}': '{host}' is not an IP address");
    }

    public static MetricsEndpoint Start(IPEndPoint at, Func<string> metrics, Func<bool> healthy)
    {
        var listener = new TcpListener(at);
        try
        {
            listener.Start();
        }
        catch (SocketException e)
        {
            throw new DiffKeeperException(ExitCode.SystemError, $"cannot listen on {at} for metrics: {e.Message}; choose another --metrics-addr", e);
        }

        return new MetricsEndpoint(listener, metrics, healthy);
    }

    private async Task ServeAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
            {
                return;
            }

            using (client)
            {
                try
                {
                    await AnswerAsync(client.GetStream()).ConfigureAwait(false);
                }
                catch (Exception e) when (e is IOException or SocketException or OperationCanceledException)
                {
                    // the client went away
                }
            }
        }
    }

    private async Task AnswerAsync(NetworkStream stream)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        timeout.CancelAfter(TimeSpan.FromSeconds(5));
        var buffer = new byte[8192];
        var length = 0;
        while (length < buffer.Length)
        {
            var n = await stream.ReadAsync(buffer.AsMemory(length), timeout.Token).ConfigureAwait(false);
            if (n == 0)
            {
                break;
            }

            length += n;
            if (buffer.AsSpan(0, length).IndexOf("\r\n\r\n"u8) >= 0 || buffer.AsSpan(0, length).IndexOf("\n\n"u8) >= 0)
            {
                break;
            }
        }

        var requestLine = Encoding.ASCII.GetString(buffer, 0, length).Split('\n')[0].Trim();
        var parts = requestLine.Split(' ');
        var path = parts.Length >= 2 ? parts[1].Split('?')[0] : "";
        var (status, type, body) = (parts[0], path) switch
        {
            ("GET" or "HEAD", "/metrics") => ("200 OK", PrometheusExposition.ContentType, _metrics()),
            ("GET" or "HEAD", "/healthz") when _healthy() => ("200 OK", "text/plain; charset=utf-8", "ok\n"),
            ("GET" or "HEAD", "/healthz") => ("503 Service Unavailable", "text/plain; charset=utf-8", "not recording\n"),
            ("GET" or "HEAD", _) => ("404 Not Found", "text/plain; charset=utf-8", "try /metrics or /healthz\n"),
            _ => ("405 Method Not Allowed", "text/plain; charset=utf-8", "GET only\n"),
        };
        var bytes = Encoding.UTF8.GetBytes(body);
        var head = Encoding.ASCII.GetBytes($"HTTP/1.1 {status}\r\nContent-Type: {type}\r\nContent-Length: {bytes.Length}\r\nConnection: close\r\n\r\n");
        await stream.WriteAsync(head, timeout.Token).ConfigureAwait(false);
        if (parts[0] != "HEAD")
        {
            await stream.WriteAsync(bytes, timeout.Token).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync().ConfigureAwait(false);
        _listener.Stop();
        try
        {
            await _serving.ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }

        _listener.Dispose();
        _stop.Dispose();
    }
}
