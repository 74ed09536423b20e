namespace DiffKeeper.Remote.S3;

/// <summary>
/// A role's credentials for a web identity token (EKS IRSA, GitHub's OIDC): STS AssumeRoleWithWebIdentity
/// (<see cref="Sts"/>), unsigned, with RoleArn, RoleSessionName and WebIdentityToken; the token file is read again at
/// every fetch (Kubernetes rotates it).
/// </summary>
internal sealed class WebIdentityCredentials(string provider, Uri sts, string roleArn, string tokenFile, string? sessionName)
{
    public async Task<AwsCredentials> AssumeAsync(CancellationToken cancel)
    {
        string token;
        try
        {
            token = (await File.ReadAllTextAsync(tokenFile, cancel).ConfigureAwait(false)).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw AwsCredentials.Failed(provider, $"cannot read the token file {tokenFile}: {e.Message}");
        }

        if (token.Length == 0)
        {
            throw AwsCredentials.Failed(provider, $"the token file {tokenFile} is empty");
        }

        return await Sts.CallAsync(provider, sts, "AssumeRoleWithWebIdentity",
            [("RoleArn", roleArn), ("RoleSessionName", sessionName ?? Sts.SessionName()), ("WebIdentityToken", token)],
            signWith: null, region: "", cancel).ConfigureAwait(false);
    }
}
