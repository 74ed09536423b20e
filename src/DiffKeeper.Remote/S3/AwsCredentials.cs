using System.Globalization;
using System.Text.Json;
using DiffKeeper.Core;

namespace DiffKeeper.Remote.S3;

/// <summary>
/// Access key, secret and (for temporary credentials) session token; <see cref="Expiration"/> is null for
/// credentials that do not expire. <see cref="Provider"/> names where they came from, for messages.
/// </summary>
public sealed record AwsCredentials(string AccessKeyId, string SecretAccessKey, string? SessionToken, DateTimeOffset? Expiration = null, string Provider = "")
{
    /// <summary>
    /// Credentials from the JSON document the instance metadata service, the container endpoint and a
    /// credential_process answer with: AccessKeyId, SecretAccessKey, Token (or SessionToken), Expiration (RFC 3339;
    /// optional), and for credential_process Version 1. A document that does not read this way is a one-line failure of <paramref name="provider"/>.
    /// </summary>
    internal static AwsCredentials FromJson(string json, string provider)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            string? Text(string name) => root.ValueKind == JsonValueKind.Object && root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
                ? v.GetString() : null;

            if (root.ValueKind == JsonValueKind.Object && root.TryGetProperty("Version", out var version)
                && !(version.ValueKind == JsonValueKind.Number && version.TryGetInt32(out var v1) && v1 == 1))
            {
                throw Failed(provider, $"the document's Version is {version.GetRawText()}, not 1");
            }

            if (Text("Code") is { } code && code != "Success")
            {
                throw Failed(provider, $"the answer says Code {code}{(Text("Message") is { } m ? ": " + m : "")}");
            }

            var id = Text("AccessKeyId");
            var secret = Text("SecretAccessKey");
            if (string.IsNullOrEmpty(id) || string.IsNullOrEmpty(secret))
            {
                throw Failed(provider, "the answer has no AccessKeyId and SecretAccessKey");
            }

            return new AwsCredentials(id, secret, Text("Token") ?? Text("SessionToken"), ParseExpiration(Text("Expiration"), provider), provider);
        }
        catch (JsonException)
        {
            throw Failed(provider, "the answer is not a JSON object");
        }
    }

    internal static DateTimeOffset? ParseExpiration(string? text, string provider) =>
        text is null ? null
        : DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var at) ? at.ToUniversalTime()
        : throw Failed(provider, $"the expiration '{text}' is not a time");

    /// <summary>The one-line failure of a credential provider (exit 10), naming it.</summary>
    internal static DiffKeeperException Failed(string provider, string what) => new(ExitCode.SystemError, $"AWS credentials from {provider}: {what}");
}
