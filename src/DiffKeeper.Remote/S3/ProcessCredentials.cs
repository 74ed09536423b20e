using System.Diagnostics;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// A profile's credential_process: the command run by /bin/sh -c (as the Java and Go SDKs run it on Unix), its
/// standard input empty and its standard error kept for the failure line; its standard output is the JSON document
/// the AWS CLI documents (Version 1, AccessKeyId, SecretAccessKey, SessionToken, Expiration). Given 60 s.
/// </summary>
internal static class ProcessCredentials
{
    public static async Task<AwsCredentials> RunAsync(string command, string provider, CancellationToken cancel)
    {
        var psi = new ProcessStartInfo("/bin/sh")
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add(command);
        Process process;
        try
        {
            process = Process.Start(psi) ?? throw new InvalidOperationException("no process");
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            throw AwsCredentials.Failed(provider, $"cannot run /bin/sh: {e.Message}");
        }

        using (process)
        {
            process.StandardInput.Close();
            var stdout = process.StandardOutput.ReadToEndAsync(cancel);
            var stderr = process.StandardError.ReadToEndAsync(cancel);
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
            deadline.CancelAfter(TimeSpan.FromSeconds(60));
            try
            {
                await process.WaitForExitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill(entireProcessTree: true);
                if (cancel.IsCancellationRequested)
                {
                    throw;
                }

                throw AwsCredentials.Failed(provider, $"'{command}' did not finish in 60 s");
            }

            var output = await stdout.ConfigureAwait(false);
            var errors = await stderr.ConfigureAwait(false);
            if (process.ExitCode != 0)
            {
                var line = errors.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault();
                throw AwsCredentials.Failed(provider, $"'{command}' exited with status {process.ExitCode}{(line is null ? "" : ": " + line)}");
            }

            return AwsCredentials.FromJson(output, provider);
        }
    }
}
