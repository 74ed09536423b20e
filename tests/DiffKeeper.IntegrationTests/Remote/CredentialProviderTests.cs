using DiffKeeper.Storage.Tests;

namespace DiffKeeper.IntegrationTests.Remote;

/// <summary>
/// The credential providers of diffkeeper's S3 client (issue 16), each against a real local server speaking its
/// protocol (<see cref="AwsCredentialServer"/>: IMDSv2, STS AssumeRoleWithWebIdentity, the container endpoint),
/// reached through the endpoint variables the AWS SDKs honour (AWS_EC2_METADATA_SERVICE_ENDPOINT,
/// AWS_ENDPOINT_URL_STS, AWS_CONTAINER_CREDENTIALS_FULL_URI). The real services are unreachable from this machine,
/// so they are served locally; the protocols are the real ones. The access key id they hand out is the only one
/// the test's real S3 server (s3rver) lets in (it checks the key id, not a V4 signature), and every other source of
/// credentials is emptied, so a command that lists the bucket shows they were used.
/// </summary>
public sealed class CredentialProviderTests : IDisposable
{
    private static readonly string[] AwsVariables =
    [
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME", "AWS_ENDPOINT_URL_STS", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_EC2_METADATA_DISABLED",
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE",
    ];

    private readonly TempDir _tmp = new();
    private readonly AwsCredentialServer _aws = new();

    public void Dispose()
    {
        _aws.Dispose();
        _tmp.Dispose();
    }

    [Fact]
    public void An_instance_role_is_read_from_IMDSv2_and_fetched_again_before_it_expires()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        var env = Environment(s3, ("AWS_EC2_METADATA_SERVICE_ENDPOINT", _aws.Address));

        var list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/imds");
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Equal(
            ["PUT /latest/api/token", "GET /latest/meta-data/iam/security-credentials/", "GET /latest/meta-data/iam/security-credentials/dk-fleet-role"],
            _aws.Log);

        // Credentials valid for 2 s are fetched again halfway, with the same IMDS token, while a recording uploads
        // for 3 s; every upload is let in.
        _aws.Lifetime = TimeSpan.FromSeconds(2);
        env["DIFFKEEPER_UPLOAD_INTERVAL_SECONDS"] = "0.5";
        var work = _tmp.Sub("work");
        Directory.CreateDirectory(work);
        var record = RemoteStoreTests.Run(env, work, "record", "--trace", $"s3://{S3rverProcess.Bucket}/imds", "--", "bash", "-c",
            "for i in 1 2 3 4; do echo $i > f$i; sleep 0.75; done");
        Assert.True(record.ExitCode == 0, record.ToString());
        Assert.Equal(2, _aws.Count("PUT /latest/api/token"));
        Assert.True(_aws.Count("GET /latest/meta-data/iam/security-credentials/dk-fleet-role") >= 3, string.Join('\n', _aws.Log));
        Assert.Single(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/imds").Lines);
    }

    [Fact]
    public void A_web_identity_token_is_exchanged_at_STS_and_a_refused_one_is_one_line_naming_the_provider()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        var tokenFile = Path.Combine(_tmp.Path, "token");
        File.WriteAllText(tokenFile, _aws.WebIdentityToken + "\n");
        var env = Environment(s3, ("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile), ("AWS_ROLE_ARN", _aws.RoleArn),
            ("AWS_ENDPOINT_URL_STS", _aws.Address + "/sts/"), ("AWS_ROLE_SESSION_NAME", "ci-job-7"));

        var list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/irsa");
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Equal([$"POST /sts/ Action=AssumeRoleWithWebIdentity Version=2011-06-15 RoleArn={_aws.RoleArn} RoleSessionName=ci-job-7 token={_aws.WebIdentityToken}"], _aws.Log);

        // The token STS refuses, a role it refuses, half a configuration: one line each, naming the provider.
        File.WriteAllText(tokenFile, "expired-token");
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/irsa"),
            "AWS credentials from web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN): STS AssumeRoleWithWebIdentity for arn:aws:iam::123456789012:role/dk-ci answered 400 InvalidIdentityToken");
        File.WriteAllText(tokenFile, _aws.WebIdentityToken);
        env["AWS_ROLE_ARN"] = "arn:aws:iam::123456789012:role/other";
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/irsa"), "answered 403 AccessDenied");
        env["AWS_ROLE_ARN"] = "";
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/irsa"),
            "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
    }

    /// <summary>
    /// The order of the AWS SDKs' default chain (Java SDK v2, PHP SDK): environment, web identity, profile (static
    /// keys, then credential_process), container endpoint, instance metadata. Every provider is configured at once,
    /// the ones ahead are taken away one by one, and each time the first one left is the one asked (the others get no
    /// request) and its credentials are the ones S3 lets in.
    /// </summary>
    [Fact]
    public void Providers_are_asked_in_the_SDKs_order_and_the_first_configured_one_answers()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        var tokenFile = Path.Combine(_tmp.Path, "token");
        File.WriteAllText(tokenFile, _aws.WebIdentityToken);
        var authFile = Path.Combine(_tmp.Path, "pod-identity-token");
        File.WriteAllText(authFile, _aws.ContainerAuthorization);
        var config = Path.Combine(_tmp.Path, "config");
        File.WriteAllText(config, """
            [profile fleet]
            region = us-east-1
            credential_process = printf '{"Version": 1, "AccessKeyId": "S3RVER", "SecretAccessKey": "S3RVER", "SessionToken": "from-process"}'
            """);
        var env = Environment(s3,
            ("AWS_ACCESS_KEY_ID", "S3RVER"), ("AWS_SECRET_ACCESS_KEY", "S3RVER"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", tokenFile), ("AWS_ROLE_ARN", _aws.RoleArn), ("AWS_ENDPOINT_URL_STS", _aws.Address + "/sts/"),
            ("AWS_PROFILE", "fleet"), ("AWS_CONFIG_FILE", config),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", _aws.Address + "/v1/credentials"), ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", authFile),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", _aws.Address));

        string Asked()
        {
            var before = _aws.Log.Count;
            var list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/order");
            Assert.True(list.ExitCode == 0, list.ToString());
            return string.Join(", ", _aws.Log.Skip(before).Select(l => l.Split(' ')[1]).Distinct());
        }

        Assert.Equal("", Asked());                                   // the environment
        env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = "";
        Assert.Equal("/sts/", Asked());                              // web identity
        env["AWS_WEB_IDENTITY_TOKEN_FILE"] = env["AWS_ROLE_ARN"] = "";
        Assert.Equal("", Asked());                                   // the profile's credential_process
        env["AWS_PROFILE"] = "";
        Assert.Equal("/v1/credentials", Asked());                    // the container endpoint
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = "";
        Assert.Equal("/latest/api/token, /latest/meta-data/iam/security-credentials/, /latest/meta-data/iam/security-credentials/dk-fleet-role", Asked());

        // A control: s3rver checks the access key id (not a V4 signature), so a key id that is not its own is refused.
        env["AWS_ACCESS_KEY_ID"] = "AKIAOTHER";
        env["AWS_SECRET_ACCESS_KEY"] = "S3RVER";
        var refused = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", $"s3://{S3rverProcess.Bucket}/order");
        Assert.True(refused.ExitCode == 10, refused.ToString());
    }

    [Fact]
    public void A_failing_provider_is_one_line_naming_it()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        var url = $"s3://{S3rverProcess.Bucket}/failing";

        _aws.Role = null;
        AssertOneLine(RemoteStoreTests.Run(Environment(s3, ("AWS_EC2_METADATA_SERVICE_ENDPOINT", _aws.Address)), _tmp.Path, "sessions", "--trace", url),
            $"AWS credentials from the EC2 instance metadata service (IMDSv2 at {_aws.Address}): the instance has no IAM role");

        var config = Path.Combine(_tmp.Path, "config");
        File.WriteAllText(config, "[default]\ncredential_process = sh -c 'echo token expired, run aws sso login >&2; exit 3'\n");
        AssertOneLine(RemoteStoreTests.Run(Environment(s3, ("AWS_CONFIG_FILE", config)), _tmp.Path, "sessions", "--trace", url),
            "AWS credentials from credential_process (profile 'default' of " + config + "): 'sh -c 'echo token expired, run aws sso login >&2; exit 3'' exited with status 3: token expired, run aws sso login");

        AssertOneLine(RemoteStoreTests.Run(Environment(s3, ("AWS_CONTAINER_CREDENTIALS_FULL_URI", _aws.Address + "/v1/credentials"),
                ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer stale")), _tmp.Path, "sessions", "--trace", url),
            $"AWS credentials from the container credentials endpoint (AWS_CONTAINER_CREDENTIALS_*_URI): GET {_aws.Address}/v1/credentials answered 403");
        AssertOneLine(RemoteStoreTests.Run(Environment(s3, ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://192.0.2.1/creds")), _tmp.Path, "sessions", "--trace", url),
            "is plain http to a host that is neither a loopback address");

        AssertOneLine(RemoteStoreTests.Run(Environment(s3, ("AWS_EC2_METADATA_DISABLED", "true")), _tmp.Path, "sessions", "--trace", url),
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    }

    /// <summary>
    /// A profile that assumes a role whose source_profile assumes another (botocore's chains): each AssumeRole is
    /// signed with the previous hop's credentials, which the STS server checks by recomputing the signature; the
    /// profile's own static keys (not s3rver's) lose to its role_arn, as in botocore; a profile may be the source of its own
    /// keys. A loop, and a source secret STS
    /// refuses, are one line naming the profile.
    /// </summary>
    [Fact]
    public void A_source_profile_chain_of_two_roles_is_assumed_with_each_hops_credentials_and_loops_and_bad_keys_are_one_line()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        const string hopRole = "arn:aws:iam::111111111111:role/hop";
        const string fleetRole = "arn:aws:iam::123456789012:role/fleet";
        _aws.Secrets["AKIABASE"] = "base-secret";
        _aws.Roles[hopRole] = new("AKIABASE", ExternalId: "partner-7", AccessKeyId: "ASIAHOP", SecretAccessKey: "hop-secret");
        _aws.Roles[fleetRole] = new("ASIAHOP");
        var credentials = Path.Combine(_tmp.Path, "credentials");
        void Credentials(string baseSecret) => File.WriteAllText(credentials,
            $"[base]\naws_access_key_id = AKIABASE\naws_secret_access_key = {baseSecret}\n[fleet]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = other\n");
        var config = Path.Combine(_tmp.Path, "config");
        void Config(string hopSource) => File.WriteAllText(config, $"""
            [profile hop]
            role_arn = {hopRole}
            source_profile = {hopSource}
            external_id = partner-7

            [profile fleet]
            role_arn = {fleetRole}
            source_profile = hop
            role_session_name = ci-job-7
            duration_seconds = 900
            """);
        Credentials("base-secret");
        Config("base");
        var env = Environment(s3, ("AWS_PROFILE", "fleet"), ("AWS_SHARED_CREDENTIALS_FILE", credentials), ("AWS_CONFIG_FILE", config),
            ("AWS_ENDPOINT_URL_STS", _aws.Address + "/sts/"));
        var url = $"s3://{S3rverProcess.Bucket}/roles";

        var list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Collection(_aws.Log,
            l => Assert.Matches($"^POST /sts/ Action=AssumeRole Version=2011-06-15 RoleArn={hopRole} RoleSessionName=diffkeeper-[0-9]+ ExternalId=partner-7 DurationSeconds= key=AKIABASE$", l),
            l => Assert.Equal($"POST /sts/ Action=AssumeRole Version=2011-06-15 RoleArn={fleetRole} RoleSessionName=ci-job-7 ExternalId= DurationSeconds=900 key=ASIAHOP", l));

        // A profile naming itself as the source of its own static keys is no loop (botocore allows it).
        const string soloRole = "arn:aws:iam::123456789012:role/solo";
        _aws.Roles[soloRole] = new("AKIABASE");
        File.AppendAllText(config, $"\n[profile solo]\nrole_arn = {soloRole}\nsource_profile = solo\naws_access_key_id = AKIABASE\naws_secret_access_key = base-secret\n");
        env["AWS_PROFILE"] = "solo";
        list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Matches($"RoleArn={soloRole} .* key=AKIABASE$", _aws.Log[^1]);
        env["AWS_PROFILE"] = "fleet";

        Config("fleet");
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url),
            $"AWS credentials from assume role (profile 'hop' of {config}): the source_profile chain loops: fleet -> hop -> fleet");

        Config("base");
        Credentials("not-the-secret");
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url),
            $"AWS credentials from assume role (profile 'hop' of {config}): STS AssumeRole for {hopRole} answered 403 SignatureDoesNotMatch: The request signature we calculated");
    }

    /// <summary>
    /// role_arn with credential_source: Environment (such a profile, named by AWS_PROFILE or the default one, is asked
    /// before the bare environment keys, which s3rver would refuse, as in aws-sdk-ruby#3301), and Ec2InstanceMetadata.
    /// </summary>
    [Fact]
    public void A_role_with_credential_source_is_assumed_with_the_environments_or_the_instances_credentials()
    {
        using var s3 = S3rverProcess.Start(_tmp.Sub("s3"));
        const string role = "arn:aws:iam::123456789012:role/deploy";
        _aws.Secrets["AKIABASE"] = "base-secret";
        _aws.Roles[role] = new("AKIABASE");
        var config = Path.Combine(_tmp.Path, "config");
        File.WriteAllText(config, $"[profile deploy]\nrole_arn = {role}\ncredential_source = Environment\n");
        var env = Environment(s3, ("AWS_PROFILE", "deploy"), ("AWS_CONFIG_FILE", config), ("AWS_ENDPOINT_URL_STS", _aws.Address + "/sts/"),
            ("AWS_ACCESS_KEY_ID", "AKIABASE"), ("AWS_SECRET_ACCESS_KEY", "base-secret"));
        var url = $"s3://{S3rverProcess.Bucket}/source";

        var list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Contains($"RoleArn={role} ", Assert.Single(_aws.Log), StringComparison.Ordinal);
        Assert.EndsWith("key=AKIABASE", _aws.Log[0], StringComparison.Ordinal);
        File.WriteAllText(config, $"[default]\nrole_arn = {role}\ncredential_source = Environment\n");
        env["AWS_PROFILE"] = "";
        list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.Equal(2, _aws.Count("POST /sts/ Action=AssumeRole"));
        env["AWS_PROFILE"] = "deploy";

        // The instance role's credentials (s3rver's key id, with the IMDS session token) as the source.
        File.WriteAllText(config, $"[profile deploy]\nrole_arn = {role}\ncredential_source = Ec2InstanceMetadata\n");
        _aws.Secrets["S3RVER"] = "S3RVER";
        _aws.Roles[role] = new("S3RVER");
        env["AWS_ACCESS_KEY_ID"] = env["AWS_SECRET_ACCESS_KEY"] = "";
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = _aws.Address;
        list = RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url);
        Assert.True(list.ExitCode == 0, list.ToString());
        Assert.EndsWith("key=S3RVER", _aws.Log[^1], StringComparison.Ordinal);
        Assert.Equal(1, _aws.Count("PUT /latest/api/token"));

        File.WriteAllText(config, $"[profile deploy]\nrole_arn = {role}\ncredential_source = Ec2\n");
        AssertOneLine(RemoteStoreTests.Run(env, _tmp.Path, "sessions", "--trace", url),
            $"AWS credentials from assume role (profile 'deploy' of {config}): credential_source 'Ec2' is none of Environment, Ec2InstanceMetadata, EcsContainer");
    }

    /// <summary>Only s3rver's endpoint and an empty HOME: every AWS variable of the test's own environment emptied, then <paramref name="set"/>.</summary>
    private Dictionary<string, string> Environment(S3rverProcess s3, params (string Name, string Value)[] set)
    {
        var env = s3.Environment(_tmp.Sub("cache"));
        foreach (var name in AwsVariables)
        {
            env[name] = "";
        }

        var home = _tmp.Sub("home");
        Directory.CreateDirectory(home);
        env["HOME"] = home;
        foreach (var (name, value) in set)
        {
            if (name == "AWS_EC2_METADATA_SERVICE_ENDPOINT")
            {
                // The local metadata server answers in milliseconds, but the SDKs' default deadline of 1 s a request
                // was missed once while the whole suite loaded both cores; the deadline is the user's to set.
                env["AWS_METADATA_SERVICE_TIMEOUT"] = "10";
            }

            env[name] = value;
        }

        return env;
    }

    private static void AssertOneLine(Cli.Result r, string expected)
    {
        Assert.True(r.ExitCode == 10, r.ToString());
        var line = Assert.Single(r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("diffkeeper: ", line, StringComparison.Ordinal);
        Assert.Contains(expected, line, StringComparison.Ordinal);
    }
}
