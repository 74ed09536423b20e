using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// A real S3 server process on 127.0.0.1: the npm package s3rver, installed under tests/s3rver by
/// scripts/deps.sh (ensure_s3rver, run by test.sh). Its objects live in a directory of their own, so a restarted
/// server on the same directory and port serves what was uploaded before it was killed.
/// </summary>
public sealed class S3rverProcess : IDisposable
{
    public const string Bucket = "fleet";
    private Process? _process;

    private S3rverProcess(string script, string dataDir, int port)
    {
        Script = script;
        DataDir = dataDir;
        Port = port;
    }

    public string Script { get; }

    public string DataDir { get; }

    public int Port { get; }

    public string Endpoint => $"http://127.0.0.1:{Port}";

    /// <summary>Starts a server, or skips the test with the reason when node or s3rver is missing.</summary>
    public static S3rverProcess Start(string dataDir)
    {
        string? root = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DiffKeeper.slnx")))
            {
                root = dir.FullName;
                break;
            }
        }

        var script = root is null ? "" : Path.Combine(root, "tests", "s3rver", "node_modules", "s3rver", "bin", "s3rver.js");
        if (!File.Exists(script))
        {
            Assert.Skip($"s3rver is not installed at {script}: run scripts/deps.sh's ensure_s3rver (./test.sh does), which needs node and npm");
        }

        if (FindNode() is null)
        {
            Assert.Skip("node is not on PATH: s3rver (the test's S3 server) needs it (apt-get install nodejs)");
        }

        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        var server = new S3rverProcess(script, dataDir, port);
        server.Restart();
        return server;
    }

    private static string? FindNode() =>
        (System.Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "node")).FirstOrDefault(File.Exists);

    /// <summary>Starts the server (again) on the same port and directory and waits until it answers.</summary>
    public void Restart()
    {
        Directory.CreateDirectory(DataDir);
        var psi = new ProcessStartInfo(FindNode()!) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Script, "-d", DataDir, "-a", "127.0.0.1", "-p", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--silent", "--configure-bucket", Bucket })
        {
            psi.ArgumentList.Add(a);
        }

        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            try
            {
                using var probe = new TcpClient();
                probe.Connect(IPAddress.Loopback, Port);
                return;
            }
            catch (SocketException) when (DateTime.UtcNow < deadline && !_process.HasExited)
            {
                Thread.Sleep(50);
            }
        }
    }

    /// <summary>kill -9 of the server, as a crash or a network cut would look to a client.</summary>
    public void Kill()
    {
        _process?.Kill(entireProcessTree: true);
        _process?.WaitForExit();
        _process?.Dispose();
        _process = null;
    }

    /// <summary>Environment for a diffkeeper process that talks to this server.</summary>
    public Dictionary<string, string> Environment(string cacheDir) => new()
    {
        ["AWS_ACCESS_KEY_ID"] = "S3RVER",
        ["AWS_SECRET_ACCESS_KEY"] = "S3RVER",
        ["AWS_ENDPOINT_URL"] = Endpoint,
        ["AWS_REGION"] = "us-east-1",
        ["DIFFKEEPER_CACHE"] = cacheDir,
    };

    public void Dispose() => Kill();
}
