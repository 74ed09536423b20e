using System.Net.Sockets;
using System.Text;

namespace DiffKeeper.IntegrationTests.Keep;

/// <summary>A minimal Redis client (RESP2): one command at a time, each reply read whole before the next.</summary>
public sealed class RespClient : IDisposable
{
    private readonly TcpClient _tcp;
    private readonly NetworkStream _stream;
    private readonly BufferedStream _in;

    private RespClient(TcpClient tcp)
    {
        _tcp = tcp;
        _tcp.NoDelay = true;
        _stream = tcp.GetStream();
        _in = new BufferedStream(_stream, 65536);
    }

    /// <summary>Connects once Redis answers PING, or throws after <paramref name="timeout"/>.</summary>
    public static RespClient Connect(int port, TimeSpan timeout, Func<string>? diagnostics = null)
    {
        var until = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                var tcp = new TcpClient();
                tcp.Connect("127.0.0.1", port);
                var c = new RespClient(tcp);
                if (c.Command("PING") as string == "PONG")
                {
                    return c;
                }

                c.Dispose();
            }
            catch (Exception e) when (e is SocketException or IOException or InvalidOperationException)
            {
                // not up yet, or still loading the AOF (-LOADING)
            }

            if (DateTime.UtcNow > until)
            {
                throw new TimeoutException($"redis on port {port} did not answer PING within {timeout}; {diagnostics?.Invoke()}");
            }

            Thread.Sleep(20);
        }
    }

    /// <summary>Sends a command; returns a string (simple or bulk), a long, null, or an object?[] (array). Errors throw.</summary>
    public object? Command(params string[] args)
    {
        var sb = new StringBuilder();
        sb.Append('*').Append(args.Length).Append("\r\n");
        foreach (var a in args)
        {
            sb.Append('$').Append(Encoding.UTF8.GetByteCount(a)).Append("\r\n").Append(a).Append("\r\n");
        }

        var bytes = Encoding.UTF8.GetBytes(sb.ToString());
        _stream.Write(bytes);
        return Reply();
    }

    private object? Reply()
    {
        var line = ReadLine();
        return line[0] switch
        {
            '+' => line[1..],
            '-' => throw new InvalidOperationException("redis: " + line[1..]),
            ':' => long.Parse(line[1..]),
            '$' => Bulk(int.Parse(line[1..])),
            '*' => int.Parse(line[1..]) is var n and >= 0 ? Enumerable.Range(0, n).Select(_ => Reply()).ToArray() : null,
            _ => throw new IOException("bad RESP reply: " + line),
        };
    }

    private string? Bulk(int length)
    {
        if (length < 0)
        {
            return null;
        }

        var buffer = new byte[length + 2];
        _in.ReadExactly(buffer);
        return Encoding.UTF8.GetString(buffer, 0, length);
    }

    private string ReadLine()
    {
        var sb = new StringBuilder();
        while (true)
        {
            var b = _in.ReadByte();
            if (b < 0)
            {
                throw new IOException("redis closed the connection");
            }

            if (b == '\r')
            {
                _in.ReadByte();
                return sb.ToString();
            }

            sb.Append((char)b);
        }
    }

    public void Dispose()
    {
        _in.Dispose();
        _tcp.Dispose();
    }
}
